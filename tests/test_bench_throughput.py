"""bench/throughput.py (`make bench`) and bench/backends.py (its hf row; the vLLM lane runs the others)
end to end at the smallest size, on the tiny model."""

import importlib.util
import json

import pytest
from conftest import ROOT


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_now_equals_before_on_the_same_requests(tiny_model, capsys):
    """Today's hf backend (length-sorted batches, logits_to_keep, batched scoring) against the one at BASELINE,
    read from git, on the method's own FPB requests: greedy token ids equal, log-probabilities within float
    rounding, and the limit and rates printed for every stage."""
    bench = _load("throughput")
    if not (bench.RELEASED / "fpb").is_dir():
        pytest.skip(f"the released data is not at {bench.RELEASED} (set SEMIEVOL_DATA; see its SOURCE.md)")
    got = bench.main(["--model", str(tiny_model), "--template", "default", "--questions", "3",
                      "--batch-size", "2", "--max-new-tokens", "4", "--threads", "1"])
    out = capsys.readouterr().out
    stages = {r["stage"]: r for r in got["stages"]}
    assert list(stages) == ["collaborate", "justify", "score", "evaluate"]
    # 3 questions x 0-3 shots; one justify, score and test request per question
    assert [stages[s]["requests"] for s in stages] == [12, 3, 3, 3]
    for stage in ("collaborate", "justify", "evaluate"):
        assert stages[stage]["agreement"] == f"{stages[stage]['requests']}/{stages[stage]['requests']} equal"
    assert float(stages["score"]["agreement"].split()[-1]) < 1e-4  # 'max |dlogp| 2.4e-07'
    assert got["limits"]["float32"] > 0 and got["threads"] == 1
    for record in got["stages"]:
        for rate in record["rates"].values():
            assert rate["GFLOP/s"] > 0 and 0 < rate["share of limit"]
    assert "fp32" in out and out.count("x  ") >= 8  # a speed-up column for both paths of every stage


def test_backends_hf_row_and_its_table(tiny_model, tmp_path, capsys):
    backends = _load("backends")
    adapter = _load("throughput").make_adapter(tiny_model, tmp_path / "warm")  # a perturbed LoRA, untrained
    out = tmp_path / "hf.json"
    backends.main(["run", "--backend", "hf", "--model", str(tiny_model), "--adapter", str(adapter), "--out", str(out),
                   "--prompts", "2", "--max-new-tokens", "4", "--stop-id", "2"])
    got = json.loads(out.read_text())
    assert got["backend"] == "hf" and got["requests"] == {"generate": 4, "score": 4}
    assert len(got["token_ids"]) == len(got["texts"]) == 4 and all(len(t) <= 4 for t in got["token_ids"])
    _, scores = backends.workload(2, 4)
    assert [len(s) for s in got["scores"]] == [len(r.response_ids) for r in scores]  # one per response token
    assert all(lp <= 0 for s in got["scores"] for lp in s)
    capsys.readouterr()
    backends.main(["table", str(out), str(out)])
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split()[:3] == ["backend", "load", "s"] and [r.split()[0] for r in rows[2:]] == ["hf", "hf"]
