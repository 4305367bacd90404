"""`make test-gpu`'s part that needs no vLLM: the hf + LlamaFactory path on one CUDA GPU.

What an offline machine given `WHEELS=dir` without a vllm wheel still checks (and every CUDA machine
checks first): `semievol-lf run recipes/run_demo.yaml` on the demo task, one round, in this process
(so that the GPU memory can be read when each fine-tune starts):
- the demo's tiny model built on the machine (nothing downloaded);
- pseudo-labeling and the Vanilla / SFT / SemiEvol evaluations on the hf backend in bf16 on the GPU;
- the warm-up and evolve fine-tunes by LlamaFactory in bf16;
- no CUDA tensor of the run alive when a fine-tune starts (each step closed its backend and emptied
  the CUDA cache before LlamaFactory took the GPU).
Seconds, the memory read at each fine-tune and the accuracies go to runs/test-gpu/hf_timings.json.
"""

import json
import logging
import shutil
import time

import pytest
from conftest import ROOT

pytestmark = pytest.mark.gpu

OUT = ROOT / "runs" / "test-gpu"


def test_the_method_on_hf_and_llamafactory_in_bf16(monkeypatch, caplog):
    import torch

    from semievol_lf.llamafactory import launcher
    from semievol_lf.semievol import pipeline

    run_dir = OUT / "hf-run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a finished run would skip its steps
    at_train: list[dict] = []
    train = launcher.train

    def recording_train(name, recipe, *args, **kwargs):
        torch.cuda.synchronize()
        at_train.append({"name": name, "bf16": recipe.get("bf16"), "allocated_bytes": torch.cuda.memory_allocated(),
                         "reserved_bytes": torch.cuda.memory_reserved()})
        return train(name, recipe, *args, **kwargs)

    monkeypatch.setattr(launcher, "train", recording_train)
    caplog.set_level(logging.INFO, logger="semievol_lf")
    start = time.perf_counter()
    summary = pipeline.main(argv=[str(ROOT / "recipes" / "run_demo.yaml"), f"output_dir={run_dir}",
                                  "iterations=1", "backend=hf", "dtype=bfloat16",
                                  "train_overrides={bf16: true}"])
    wall = time.perf_counter() - start

    (rnd,) = summary["rounds"]
    accuracy = {name: rnd["results"][name]["accuracy"] for name in ("Vanilla", "SFT", "SemiEvol")}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "hf_timings.json").write_text(json.dumps({
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "wall_s": round(wall, 1),
        "pseudolabel_s": rnd["pseudolabel"].get("timings_s"), "at_fine_tune_start": at_train,
        "accuracy": accuracy}, indent=2) + "\n")

    assert [t["name"] for t in at_train] == ["round_1_warmup", "round_1_evolve"], at_train
    assert all(t["bf16"] is True for t in at_train)
    assert all(t["allocated_bytes"] == 0 for t in at_train), f"CUDA tensors alive while LlamaFactory trains: {at_train}"
    described = [r.getMessage() for r in caplog.records if r.getMessage().startswith("hf backend:")]
    assert described and all("bfloat16 on cuda" in line for line in described), described
    assert rnd["pseudolabel"]["kept"] > 0 and all(0 <= a <= 1 for a in accuracy.values())
