"""`semievol-lf run` end to end on the demo task (2 iterations), its report, and resuming after a kill."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, EPOCHS, ROOT, run_cmd

from semievol_lf.semievol.evaluate import accuracy_table
from semievol_lf.semievol.layout import RunLayout

pytestmark = pytest.mark.slow
SIZES = "data_sizes={n_labeled: 30, n_unlabeled: 36, n_test: 24}"


def run_args(run_dir, tiny_model):
    return [BIN / "semievol-lf", "run", ROOT / "recipes" / "run_demo.yaml", f"output_dir={run_dir}",
            "model=tiny", f"model_name_or_path={tiny_model}", SIZES, f"train_overrides={{num_train_epochs: {EPOCHS}}}"]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, tiny_model):
    run_dir = tmp_path_factory.mktemp("run") / "demo"
    proc = run_cmd(run_args(run_dir, tiny_model), cwd=run_dir.parent)
    return run_dir, proc.stdout


def test_report_numbers_equal_a_recount_of_the_predictions(clean_run):
    run_dir, stdout = clean_run
    summary = json.loads(RunLayout(run_dir).summary.read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    report = (run_dir / "report.md").read_text()
    for rnd in summary["rounds"]:
        for name, rel in rnd["predictions"].items():
            rows = [json.loads(line) for line in open(run_dir / rel)]
            recount = sum(r["gold"] == r["pred"] for r in rows)  # letters: correct means equal
            assert recount == rnd["results"][name]["correct"] == accuracy_table(rows)["correct"]
            assert rnd["results"][name]["n"] == len(rows) == 24
    last = summary["rounds"][-1]["results"]
    for name in ("Vanilla", "SFT", "SemiEvol", "RAG"):
        assert f"{100 * last[name]['accuracy']:.1f}" in report
    assert "report:" in stdout and "SemiEvol" in stdout


def test_second_round_pseudolabels_only_what_was_not_selected(clean_run):
    run_dir, _ = clean_run
    layout = RunLayout(run_dir)
    first = json.loads((layout.pseudolabel(1) / "selected_ids.json").read_text())
    rows2 = [json.loads(line) for line in open(layout.pseudolabel(2) / "candidates.jsonl")]
    assert first and not set(first) & {r["id"] for r in rows2}
    assert len(rows2) == 36 - len(first)
    labeled2 = json.loads((layout.round_data(2) / "labeled.json").read_text())
    assert len(labeled2) == 30 + len(first)  # labeled ∪ selected is round 2's labeled set


def test_plots_are_not_blank(clean_run):
    import numpy as np
    from PIL import Image

    run_dir, _ = clean_run
    for name in ("entropy_test.png", "entropy_pseudo.png", "accuracy_rounds.png"):
        pixels = np.asarray(Image.open(run_dir / "plots" / name).convert("RGB"))
        assert (pixels.min(axis=-1) < 200).mean() > 0.01, name  # ink beyond a white page


def test_evaluate_is_deterministic(clean_run, tmp_path):
    run_dir, _ = clean_run
    from semievol_lf.semievol import evaluate

    layout = RunLayout(run_dir)
    cfg = json.loads(layout.summary.read_text())["config"]
    args = {"model_name_or_path": cfg["model_name_or_path"], "adapter_name_or_path": str(layout.warmup),
            "template": "default", "task": "demo", "data_dir": str(layout.data), "max_new_tokens": 8}
    a = evaluate.main({**args, "output_dir": str(tmp_path / "a")})
    b = evaluate.main({**args, "output_dir": str(tmp_path / "b")})
    assert a == b
    assert (tmp_path / "a/predictions.jsonl").read_text() == (tmp_path / "b/predictions.jsonl").read_text()
    sft = json.loads((layout.baseline("SFT") / "results.json").read_text())
    assert (a["correct"], a["n"]) == (sft["correct"], sft["n"])


def test_killed_run_resumes_without_redoing_finished_steps(clean_run, tmp_path, tiny_model):
    run_dir, _ = clean_run
    killed = tmp_path / "demo"
    layout = RunLayout(killed)
    # Ctrl-C mid pseudo-labeling: after its first collaborate chunk (the fault point, exact at any load).
    fault = "round_1/pseudolabel/cache/collaborate:1:sigint"
    proc = run_cmd(run_args(killed, tiny_model), cwd=tmp_path, check=False, env={**os.environ, "SEMIEVOL_FAULT": fault})
    assert proc.returncode == 130 and f"fault injected: SEMIEVOL_FAULT={fault}" in proc.stderr, proc.stderr[-3000:]
    assert not layout.pseudolabel(1).joinpath("stats.json").exists()
    warm_marker = (layout.warmup / "semievol_step.json").stat().st_mtime
    resumed = run_cmd(run_args(killed, tiny_model), cwd=tmp_path)
    assert "round_1_warmup: finished before, skipped" in resumed.stdout
    assert "evaluate: " in resumed.stdout and "already holds the finished result" in resumed.stdout
    assert (layout.warmup / "semievol_step.json").stat().st_mtime == warm_marker
    a = json.loads(RunLayout(run_dir).summary.read_text())["rounds"]
    b = json.loads(layout.summary.read_text())["rounds"]
    assert [{k: r["results"][k]["correct"] for k in r["results"]} for r in a] == \
           [{k: r["results"][k]["correct"] for k in r["results"]} for r in b]
    assert [r["pseudolabel"]["kept"] for r in a] == [r["pseudolabel"]["kept"] for r in b]


def test_no_fine_tune_starts_while_the_runs_own_inference_holds_the_gpu(tmp_path, tiny_model, trained_sandbox,
                                                                         monkeypatch):
    """backend=hf (vllm runs the same steps): every step closes its backend before the next fine-tune.
    A run on the tiny model, in-process, with each backend's opening and closing and each fine-tune
    recorded in order. The steps are real; `llamafactory-cli train` is replaced by a copy of the
    adapter it trained for `trained_sandbox` (the same model and task), to keep the test short."""
    import shutil

    import yaml

    from semievol_lf import backends, children
    from semievol_lf.semievol import pipeline as run_step

    adapter = trained_sandbox / "saves" / "tiny" / "demo" / "warmup"
    events, opened = [], []
    real_load = backends.load_backend

    def load_backend(name, *args, **kwargs):
        backend = real_load(name, *args, **kwargs)
        close = backend.close
        backend.close = lambda: (events.append("close"), close())[1]
        opened.append(backend)
        events.append("open")
        return backend

    def llamafactory_cli_train(cmd, **kwargs):
        holding = [b for b in opened if b.model is not None]  # hf's close drops the model (and empties CUDA's cache)
        events.append(("train", len(holding)))
        out = Path(yaml.safe_load(Path(cmd[2]).read_text())["output_dir"])
        shutil.copytree(adapter, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint-*"))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(backends, "load_backend", load_backend)
    monkeypatch.setattr(children, "run", llamafactory_cli_train)
    monkeypatch.chdir(tmp_path)
    summary = run_step.main(argv=[str(ROOT / "recipes" / "run_demo.yaml"), f"output_dir={tmp_path / 'demo'}",
                                  "model=tiny", f"model_name_or_path={tiny_model}",
                                  "data_sizes={n_labeled: 30, n_unlabeled: 12, n_test: 8}",
                                  "iterations=1", "rag=false"])
    assert summary["rounds"][0]["pseudolabel"]["kept"] > 0
    # warm-up, Vanilla, SFT, pseudolabel, evolve, SemiEvol
    assert events == [("train", 0), "open", "close", "open", "close", "open", "close", ("train", 0), "open", "close"]
