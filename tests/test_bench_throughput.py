"""bench/throughput.py (`make bench`) and bench/backends.py (its hf row; the vLLM lane runs the others)
end to end at the smallest size, on the tiny model."""

import importlib.util
import json

from conftest import ROOT


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_batched_and_naive_sample_the_same(tiny_model, capsys):
    got = _load("throughput").main(["--requests", "8", "--batch-size", "4", "--max-new-tokens", "4",
                                    "--model", str(tiny_model)])
    out = capsys.readouterr().out
    assert got["requests"] == 8 and len(got["texts"]) == 8 and set(got["rates"]) == {
        "batched (hf backend)", "naive loop (1 at a time)"}
    assert got["identical"], "a batch of 4 sampled other tokens than one request at a time (same seeds)"
    assert "speed-up:" in out and "on 8 requests; identical samples: True" in out


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
