"""The demo task pseudo-labeled end to end through real vLLM, the two ways a GPU user runs it.

LlamaFactory venv (.venv): the tiny model (head_dim 32, which vLLM's CPU attention needs), the
warm-up trained by `semievol-lf run ... stop_after=warmup` (real `llamafactory-cli train`), and
`semievol-lf export-chat-format`. Then the unchanged `recipes/pseudolabel_demo.yaml`:
- in THIS venv (vLLM, no LlamaFactory): `python -m semievol_lf.pseudolabel ... backend=vllm
  chat_format=...`, prompts rendered from the export;
- `vllm serve` of the base model with the warm adapter, and the step run from the LlamaFactory
  venv with `backend=openai`, prompts rendered by LlamaFactory;
- the same step with `backend=hf`.
Checks: vllm and openai give byte-identical outputs (same engine, same per-request seeds, and
the same token ids from the two renderings); entropies agree with hf to 1e-3 wherever the
pseudo-answers agree; LlamaFactory trains the evolve recipe on the vLLM output; greedy
evaluation in this venv gives hf's predictions; and a whole `semievol-lf run backend=openai`
against one server that loads each step's adapter evaluates SFT and SemiEvol with the right ones. Stage timings
of each backend go to $SEMIEVOL_BENCH_OUT/demo_pseudolabel.txt.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="needs the vLLM venv: bash scripts/make_vllm_env.sh")

from lane import MAIN_PYTHON, REPO, Server

RECIPE = str(REPO / "recipes" / "pseudolabel_demo.yaml")
MAIN_BIN = Path(MAIN_PYTHON).parent
SIZES = "{n_labeled: 30, n_unlabeled: 48, n_test: 24}"
# The tiny model cannot follow the self-justify prompt; vote keeps every stage but generation of justify.
STEP = ["justify=vote"]
OUTPUTS = ("candidates.jsonl", "selected.json", "selected_ids.json")


def run(cmd: list, **kwargs) -> float:
    """Run a command, failing with its output's tail; return its wall time."""
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> dict:
    """Demo data, model, warm adapter and exported chat format, made in the LlamaFactory venv."""
    if not Path(MAIN_PYTHON).exists():
        pytest.skip(f"the warm-up needs the LlamaFactory venv ({MAIN_PYTHON})")
    root = tmp_path_factory.mktemp("demo-e2e")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    run([MAIN_PYTHON, Path(__file__).with_name("make_fixtures.py"), "--out", root / "fixtures"], env=env)
    model = root / "fixtures" / "model"
    run([MAIN_BIN / "semievol-lf", "run", REPO / "recipes" / "run_demo.yaml", "model=tiny",
         f"model_name_or_path={model}",
         f"output_dir={root / 'run'}", f"data_sizes={SIZES}", "stop_after=warmup"], env=env)
    paths = {"root": root, "model": model, "adapter": root / "run" / "round_1" / "warmup",
             "data": root / "run" / "data", "format": root / "chat_format"}
    paths["args"] = [f"model_name_or_path={model}", f"adapter_name_or_path={paths['adapter']}",
                     f"data_dir={paths['data']}", *STEP]
    run([MAIN_BIN / "semievol-lf", "export-chat-format", RECIPE, *paths["args"], "--out", paths["format"]], env=env)
    return paths


def _result(out: Path, seconds: float, **extra) -> dict:
    return {"out": out, "wall_s": seconds, "stats": json.loads((out / "stats.json").read_text()), **extra}


@pytest.fixture(scope="module")
def hf_run(warm) -> dict:
    out = warm["root"] / "pl_hf"
    seconds = run([MAIN_PYTHON, "-m", "semievol_lf.pseudolabel", RECIPE, *warm["args"], f"output_dir={out}"],
                  env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    return _result(out, seconds)


@pytest.fixture(scope="module")
def vllm_run(warm, hf_run) -> dict:  # one engine at a time
    out = warm["root"] / "pl_vllm"
    seconds = run([sys.executable, "-m", "semievol_lf.pseudolabel", RECIPE, *warm["args"], f"output_dir={out}",
                   "backend=vllm", f"chat_format={warm['format']}",
                   "dtype=float32", "max_model_len=512", "backend_args={kv_cache_memory_bytes: 268435456}"])
    return _result(out, seconds)


@pytest.fixture(scope="module")
def openai_run(warm, vllm_run) -> dict:  # after the in-process engine has exited
    server = Server(str(warm["model"]), str(warm["adapter"]), warm["root"], max_model_len=512)
    server.start()
    try:
        out = warm["root"] / "pl_openai"
        seconds = run([MAIN_PYTHON, "-m", "semievol_lf.pseudolabel", RECIPE, *warm["args"], f"output_dir={out}",
                       "backend=openai", f"backend_args={{base_url: '{server.url}'}}"],
                      env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    finally:
        server.kill()
    return _result(out, seconds, server_start_s=server.starts[0])


def _rows(result: dict) -> list[dict]:
    return [json.loads(line) for line in (result["out"] / "candidates.jsonl").read_text().splitlines()]


def test_the_vllm_run_rendered_prompts_without_llamafactory(vllm_run):
    assert importlib.util.find_spec("llamafactory") is None  # so the step used the exported format
    assert vllm_run["stats"]["unlabeled"] == 48


def test_vllm_in_process_and_vllm_serve_give_identical_outputs(vllm_run, openai_run):
    for name in OUTPUTS:
        assert (vllm_run["out"] / name).read_bytes() == (openai_run["out"] / name).read_bytes(), name
    assert vllm_run["stats"]["tau"] == openai_run["stats"]["tau"]
    assert vllm_run["stats"]["kept"] > 0


def test_entropies_agree_with_hf_where_the_pseudo_answers_agree(hf_run, vllm_run):
    pairs = [(a["entropy"], b["entropy"]) for a, b in zip(_rows(hf_run), _rows(vllm_run))
             if a["id"] == b["id"] and a["pseudo_answer"] == b["pseudo_answer"] and a["entropy"] is not None]
    assert len(pairs) >= 5  # sampling differs between the backends; enough answers still coincide
    gap = max(abs(x - y) for x, y in pairs)
    assert gap < 1e-3, f"hf vs vllm entropy gap {gap} over {len(pairs)} samples"


def test_llamafactory_trains_the_evolve_recipe_on_the_vllm_output(warm, vllm_run):
    out = warm["root"] / "evolve"
    run([MAIN_BIN / "llamafactory-cli", "train", REPO / "recipes" / "evolve_demo.yaml",
         f"model_name_or_path={warm['model']}", f"dataset_dir={vllm_run['out']}", f"output_dir={out}",
         "num_train_epochs=1", "logging_steps=1"], cwd=warm["root"])
    log = (out / "trainer_log.jsonl").read_text().splitlines()
    rows = 30 + vllm_run["stats"]["kept"]  # labeled + selected, batch 8
    assert json.loads(log[-1])["total_steps"] == math.ceil(rows / 8)


def _evaluate(warm: dict, out: str, adapter: Path, *extra, python: str = MAIN_PYTHON) -> list[dict]:
    """Greedy evaluation of base + `adapter` on the demo test split; its predictions."""
    args = [f"model_name_or_path={warm['model']}", f"adapter_name_or_path={adapter}", f"data_dir={warm['data']}",
            f"output_dir={warm['root'] / out}"]
    run([python, "-m", "semievol_lf.evaluate", REPO / "recipes" / "evaluate_demo.yaml", *args, *extra],
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    return [json.loads(line) for line in (warm["root"] / out / "predictions.jsonl").read_text().splitlines()]


def _same_predictions(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) == 24
    assert [(r["id"], r["response"], r["pred"]) for r in a] == [(r["id"], r["response"], r["pred"]) for r in b]
    assert max(abs(x["entropy"] - y["entropy"]) for x, y in zip(a, b) if x["entropy"] is not None) < 1e-3


@pytest.fixture(scope="module")
def hf_eval(warm) -> list[dict]:
    return _evaluate(warm, "eval_hf", warm["adapter"])


def test_evaluate_in_the_vllm_venv_gives_the_hf_predictions(warm, hf_eval, vllm_run):
    """Greedy evaluation of the warm model: vllm (exported format, no LlamaFactory) against hf."""
    vllm = _evaluate(warm, "eval_vllm", warm["adapter"], "backend=vllm", f"chat_format={warm['format']}",
                     "dtype=float32", "max_model_len=512", "backend_args={kv_cache_memory_bytes: 268435456}",
                     python=sys.executable)
    _same_predictions(hf_eval, vllm)


def test_a_whole_run_over_one_server_uses_each_steps_own_adapter(warm, hf_eval, openai_run):
    """`semievol-lf run backend=openai` against one server that starts with no adapter: each step loads
    its adapter (warm-up for SFT and pseudolabel, the evolved one for SemiEvol) and unloads it after."""
    server = Server(str(warm["model"]), None, warm["root"], max_model_len=512, allow_loading=True, lora_rank=16,
                    lora_targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    server.start()
    try:
        run([MAIN_BIN / "semievol-lf", "run", REPO / "recipes" / "run_demo.yaml", "model=tiny",
             f"model_name_or_path={warm['model']}",
             f"output_dir={warm['root'] / 'run'}", f"data_sizes={SIZES}", "iterations=1", "rag=false",
             "backend=openai", f"backend_args={{base_url: '{server.url}'}}"],
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        left = [m["id"] for m in server.models() if m.get("parent") is not None]
    finally:
        server.kill()
    assert left == []  # every step unloaded the adapter it loaded
    root = warm["root"] / "run"
    summary = json.loads((root / "summary.json").read_text())
    assert set(summary["rounds"][0]["results"]) == {"Vanilla", "SFT", "SemiEvol"}

    def predictions(path: str) -> list[dict]:
        return [json.loads(line) for line in (root / path / "predictions.jsonl").read_text().splitlines()]

    _same_predictions(predictions("eval/sft"), hf_eval)  # SFT was evaluated with the warm-up adapter
    evolved = _evaluate(warm, "eval_evolve_hf", root / "round_1" / "evolve")
    _same_predictions(predictions("round_1/eval/semievol"), evolved)  # and SemiEvol with the evolved one


def test_print_the_timing_table(hf_run, vllm_run, openai_run, tmp_path):
    lines = [f"demo pseudolabel, {hf_run['stats']['unlabeled']} questions x {len(hf_run['stats']['configs'])} "
             "configurations, 2 CPU cores (seconds)",
             f"{'backend':8} {'wall':>7} {'retrieve':>9} {'collaborate':>12} {'score':>7}"]
    for name, r in [("hf", hf_run), ("vllm", vllm_run), ("openai", openai_run)]:
        t = r["stats"]["timings_s"]
        lines.append(f"{name:8} {r['wall_s']:7.1f} {t['retrieve']:9.1f} {t['collaborate']:12.2f} {t['score']:7.2f}")
    lines.append(f"wall includes start-up (vllm: its engine); vllm serve start-up {openai_run['server_start_s']:.1f} s "
                 "is not in the openai row")
    text = "\n".join(lines)
    out = Path(os.environ.get("SEMIEVOL_BENCH_OUT", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_pseudolabel.txt").write_text(text + "\n")
    print("\n" + text)
