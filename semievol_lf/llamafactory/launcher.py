"""LlamaFactory fine-tunes of a run: write the recipe, run `llamafactory-cli train` in a subprocess,
and skip a fine-tune whose marker says it already finished from the same recipe, data and model.

The marker (`semievol_step.json` in the output folder) is written only after LlamaFactory exits 0
and left its weights, so a killed or failed training is never taken for a finished one. A failure
stops the run with the command and the last lines of its log.

Resuming: a fine-tune killed after it saved a checkpoint (`save_steps`) continues from the last
`checkpoint-N` when it is run again with the same recipe, data and model (`semievol_train.json`,
written before training starts, records which inputs the checkpoints belong to); otherwise it
restarts from step 0.

Several GPUs: LlamaFactory starts torchrun on every visible GPU by itself, which multiplies the
global batch. `keep_global_batch` scales gradient accumulation so the recipe's global batch holds.

DeepSpeed: LlamaFactory's parser refuses a `deepspeed` recipe that was not started by torchrun
("Please use `FORCE_TORCHRUN=1` to launch DeepSpeed training.", hparams/parser.py), and its CLI
starts torchrun only with FORCE_TORCHRUN=1 or more than one device (launcher.py), so a recipe
with `deepspeed` is launched with FORCE_TORCHRUN=1 (`train_env`).
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import yaml

from .. import faults
from ..errors import UserError
from ..io_utils import StepMarker, atomic_write_text, file_digest, fingerprint
from ..progress import banner
from ..step import model_identity
from .dataset_info import DATA_INFO


def llamafactory_cli() -> str:
    """The `llamafactory-cli` beside this Python (the venv's), else the one on PATH."""
    exe = Path(sys.executable).with_name("llamafactory-cli")
    return str(exe) if exe.is_file() else "llamafactory-cli"


def dataset_files(dataset_dir: Path, dataset: str) -> list[Path]:
    """The files of `dataset` ("a,b": names in dataset_dir's dataset_info.json)."""
    info = json.loads((dataset_dir / DATA_INFO).read_text())
    return [dataset_dir / info[d.strip()]["file_name"] for d in dataset.split(",")]


def keep_global_batch(per_device: int, grad_acc: int, n_gpus: int) -> tuple[int, int, str | None]:
    """(per-device batch, gradient accumulation, warning) giving `n_gpus` GPUs the global batch that
    `per_device x grad_acc` gives one GPU.

    >>> keep_global_batch(1, 8, 4)
    (1, 2, None)
    >>> keep_global_batch(4, 2, 4)
    (2, 1, None)
    >>> keep_global_batch(1, 8, 3)[2][:62]
    'the global batch 8 cannot be split over 3 GPUs: it becomes 24 '
    """
    target = per_device * grad_acc
    if n_gpus <= 1:
        return per_device, grad_acc, None
    if target % n_gpus:
        return per_device, grad_acc, (
            f"the global batch {target} cannot be split over {n_gpus} GPUs: it becomes {target * n_gpus} "
            f"({per_device} x {grad_acc} x {n_gpus}); set per_device_train_batch_size and "
            "gradient_accumulation_steps in `train_overrides` to choose")
    per_gpu = target // n_gpus
    per_device = math.gcd(per_device, per_gpu)  # the largest batch that still divides the share
    return per_device, per_gpu // per_device, None


def visible_gpus() -> int:
    """How many GPUs LlamaFactory's launcher will use (it runs torchrun on all visible ones)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    import torch

    return torch.cuda.device_count()


def train_env(recipe: dict, environ: dict | None = None) -> dict | None:
    """The environment of `llamafactory-cli train RECIPE`: FORCE_TORCHRUN=1 added for a `deepspeed`
    recipe (LlamaFactory refuses DeepSpeed outside torchrun, even on one GPU); None = inherit ours.

    >>> train_env({"deepspeed": "ds_z3.json"}, {})["FORCE_TORCHRUN"]
    '1'
    >>> train_env({"lora_rank": 8}, {}) is None
    True
    """
    if not recipe.get("deepspeed"):
        return None
    return {**(os.environ if environ is None else environ), "FORCE_TORCHRUN": "1"}


def last_checkpoint(output_dir: Path) -> Path | None:
    """The `checkpoint-N` folder with the largest N that holds a trainer state, or None."""
    steps = [(int(m.group(1)), p) for p in output_dir.glob("checkpoint-*")
             if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / "trainer_state.json").is_file()]
    return max(steps)[1] if steps else None


def train(name: str, recipe: dict, recipe_path: Path, log: Path, n_gpus: int | None = None,
          while_training: AbstractContextManager | None = None) -> Path:
    """Run one fine-tune of `recipe` (a complete LlamaFactory recipe); return its output_dir.
    `while_training` is entered around the training subprocess only, not for a finished fine-tune
    (`backends.while_training`: a vLLM server sleeps meanwhile)."""
    output_dir = Path(recipe["output_dir"])
    key = fingerprint({"recipe": recipe, "data": [file_digest(f) for f in dataset_files(
        Path(recipe["dataset_dir"]), recipe["dataset"])], "model": model_identity(recipe["model_name_or_path"])})
    marker = StepMarker(output_dir / "semievol_step.json", {"key": key})
    if marker.done():
        print(f"{name}: finished before, skipped ({output_dir})")
        return output_dir
    banner(f"Train: {name}")
    recipe = dict(recipe)
    n_gpus = visible_gpus() if n_gpus is None else n_gpus
    per_device, grad_acc, warning = keep_global_batch(
        int(recipe.get("per_device_train_batch_size", 1)), int(recipe.get("gradient_accumulation_steps", 1)), n_gpus)
    if warning:
        print(f"{name}: warning: {warning}")
    elif n_gpus > 1:
        print(f"{name}: {n_gpus} GPUs: per-device batch {per_device} x gradient accumulation {grad_acc} keeps the "
              f"global batch {per_device * grad_acc * n_gpus}")
    recipe.update(per_device_train_batch_size=per_device, gradient_accumulation_steps=grad_acc)
    started = StepMarker(output_dir / "semievol_train.json", {"key": key, "gpus": n_gpus})
    checkpoint = last_checkpoint(output_dir) if started.done() else None
    if checkpoint is not None:
        print(f"{name}: resuming from {checkpoint}")
        recipe["resume_from_checkpoint"] = str(checkpoint)
    else:
        for stale in output_dir.glob("checkpoint-*"):  # made from other inputs: never resume from them
            shutil.rmtree(stale, ignore_errors=True)
        started.write()  # checkpoints from here on belong to these inputs
    atomic_write_text(recipe_path, yaml.safe_dump(recipe, sort_keys=False))
    cmd = [llamafactory_cli(), "train", str(recipe_path)]
    env = train_env(recipe)
    if env is not None:
        print(f"{name}: DeepSpeed ({recipe['deepspeed']}): FORCE_TORCHRUN=1 {' '.join(cmd)}")
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f, while_training or nullcontext():
            proc = faults.run_training(name, cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    except OSError as err:
        raise UserError(f"cannot write {log}: {err.strerror}") from None
    trained = any((output_dir / f).is_file() for f in ("adapter_config.json", "model.safetensors"))
    if proc.returncode != 0 or not trained:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-5:])
        raise UserError(f"step {name} failed (exit {proc.returncode}).\n  command: {' '.join(cmd)}\n"
                        f"  log: {log}\n  last lines:\n{tail}")
    marker.write()
    print(f"{name}: trained model in {output_dir}")
    return output_dir
