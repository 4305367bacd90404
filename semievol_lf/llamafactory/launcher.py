"""LlamaFactory fine-tunes of a run: write the recipe, run `llamafactory-cli train` in a subprocess,
and skip a fine-tune whose marker says it already finished from the same recipe, data and model.

The marker (`semievol_step.json` in the output folder) is written only after LlamaFactory exits 0
and left its weights, so a killed or failed training is never taken for a finished one. A failure
stops the run with the command and the last lines of its log.

Resuming: a fine-tune killed after it saved a checkpoint (`save_steps`) continues from the last
`checkpoint-N` when it is run again with the same recipe, data and model (`semievol_train.json`,
written before training starts, records which inputs the checkpoints belong to); otherwise it
restarts from step 0. Keys that decide only what is logged and saved along the way (`LOG_AND_SAVE`)
are left out of that key, so a finished fine-tune stays finished, and a killed one resumes, when
only they change (checkpoints added to a running experiment, a different `logging_steps`).

Several GPUs, several nodes: `llamafactory-cli train` starts torchrun by itself (its launcher.py:
with FORCE_TORCHRUN=1, or when it sees more than one device) with NNODES, NODE_RANK, MASTER_ADDR,
MASTER_PORT and NPROC_PER_NODE from the environment, which the subprocess inherits. `plan_launch`
reads them as LlamaFactory will, so the run says what it launched, and `keep_global_batch` divides
gradient accumulation by the world size (processes per node x nodes) so the recipe's global batch
holds; the saved recipe file holds the divided value. Not handled: an elastic node count
(MIN_NNODES != MAX_NNODES), and Ray (USE_RAY), whose workers are not started by torchrun.

DeepSpeed: LlamaFactory's parser refuses a `deepspeed` recipe that was not started by torchrun
("Please use `FORCE_TORCHRUN=1` to launch DeepSpeed training.", hparams/parser.py), and its CLI
starts torchrun only with FORCE_TORCHRUN=1 or more than one device (launcher.py), so a recipe
with `deepspeed` is launched with FORCE_TORCHRUN=1 (`train_env`).
"""

import dataclasses
import json
import math
import os
import re
import shutil
import socket
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
    """(per-device batch, gradient accumulation, error) giving `n_gpus` processes (the world size) the
    global batch that `per_device x grad_acc` gives one. Gradient accumulation is divided when it can
    be; otherwise the per-device batch shrinks too (8 x 1 on 2 GPUs: 4 x 1); a global batch the world
    size does not divide cannot be kept, and the third item says so, naming the keys.

    >>> keep_global_batch(1, 8, 4)
    (1, 2, None)
    >>> keep_global_batch(4, 2, 4)
    (2, 1, None)
    >>> keep_global_batch(1, 8, 3)[2][:61]
    'the global batch 8 (`per_device_train_batch_size` 1 x `gradie'
    """
    target = per_device * grad_acc
    if n_gpus <= 1:
        return per_device, grad_acc, None
    if target % n_gpus:
        return per_device, grad_acc, (
            f"the global batch {target} (`per_device_train_batch_size` {per_device} x "
            f"`gradient_accumulation_steps` {grad_acc}) cannot be split over {n_gpus} processes: it becomes "
            f"{target * n_gpus} ({per_device} x {grad_acc} x {n_gpus}); choose a global batch that {n_gpus} "
            "divides with `per_device_train_batch_size` and `gradient_accumulation_steps` in `train_overrides`, "
            "or fewer processes (NPROC_PER_NODE x NNODES)")
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


def _enabled(environ: dict, name: str) -> bool:
    """LlamaFactory's `is_env_enabled` (extras/misc.py)."""
    return environ.get(name, "0").lower() in ("true", "y", "1")


@dataclasses.dataclass(frozen=True)
class Launch:
    """How `llamafactory-cli train` starts the trainer: one process, or torchrun with these settings."""

    torchrun: bool
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: str = ""  # "" = LlamaFactory picks a free one

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes if self.torchrun else 1

    def describe(self) -> str:
        """What the log line says was launched.

        >>> Launch(True, 8, 2, 1, "10.0.0.1", "29500").describe()
        'torchrun: 8 processes per node x 2 nodes (this is node 1), master 10.0.0.1:29500'
        """
        if not self.torchrun:
            return "one process (no torchrun)"
        nodes = f"{self.nnodes} nodes (this is node {self.node_rank})" if self.nnodes > 1 else "1 node"
        return (f"torchrun: {self.nproc_per_node} process{'es' if self.nproc_per_node > 1 else ''} per node x "
                f"{nodes}, master {self.master_addr}:{self.master_port or '(a free port)'}")


def plan_launch(environ: dict, devices: int) -> Launch:
    """What `llamafactory-cli train` will start in `environ` on a node with `devices` visible devices,
    read as LlamaFactory's launcher.py reads it: torchrun with FORCE_TORCHRUN (or USE_MCA) enabled,
    or with several devices unless USE_RAY or USE_KT; NPROC_PER_NODE processes (default: `devices`) on
    each of NNODES nodes (default 1).

    >>> plan_launch({}, 1).world_size, plan_launch({}, 8).world_size
    (1, 8)
    >>> plan_launch({"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"}, 0).world_size
    2
    >>> plan_launch({"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}, 8).world_size
    16
    """
    torchrun = (_enabled(environ, "FORCE_TORCHRUN") or _enabled(environ, "USE_MCA")
                or (devices > 1 and not _enabled(environ, "USE_RAY") and not _enabled(environ, "USE_KT")))
    if not torchrun:
        if environ.get("NNODES", "1").strip() not in ("", "1"):  # each node would train alone
            raise UserError(f"NNODES={environ['NNODES']}, but LlamaFactory starts torchrun only with FORCE_TORCHRUN=1 "
                            f"or several visible GPUs ({devices} here): set FORCE_TORCHRUN=1 on every node")
        return Launch(False)
    names = ("NPROC_PER_NODE", "NNODES", "NODE_RANK")
    try:
        nproc, nnodes, rank = (int(environ.get(k) or d) for k, d in zip(names, (devices, 1, 0)))
    except ValueError:
        raise UserError(f"{', '.join(names)} must be whole numbers: "
                        + ", ".join(f"{k}={environ.get(k)!r}" for k in names)) from None
    if nproc < 1:
        raise UserError("torchrun (FORCE_TORCHRUN=1 or a `deepspeed` recipe) with no GPU visible would start 0 "
                        "processes: set NPROC_PER_NODE (on the CPU, processes that talk over gloo)")
    if nnodes > 1 and not (environ.get("MASTER_ADDR") and environ.get("MASTER_PORT")):
        raise UserError(f"NNODES={nnodes}: set MASTER_ADDR and MASTER_PORT on every node (node 0's address and "
                        "a free port there), and NODE_RANK 0 to NNODES-1")
    if environ.get("RDZV_ID") and environ.get("MIN_NNODES") is not None and environ.get("MAX_NNODES") is not None:
        if environ["MIN_NNODES"] != environ["MAX_NNODES"]:  # LlamaFactory passes --nnodes MIN:MAX then
            raise UserError("an elastic node count (MIN_NNODES != MAX_NNODES) leaves the world size open: the "
                            "global batch cannot be kept; set MIN_NNODES = MAX_NNODES, or NNODES alone")
        nnodes = int(environ["MIN_NNODES"])
    return Launch(True, nproc, nnodes, rank, environ.get("MASTER_ADDR") or "127.0.0.1", environ.get("MASTER_PORT", ""))


def free_port() -> str:
    """A TCP port free now on this host (as LlamaFactory's `find_available_port` picks one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return str(s.getsockname()[1])


def torchrun_env(environ: dict) -> dict:
    """`environ` for a torchrun launch: MASTER_PORT fixed now on a single node (so the log names it),
    and this Python's bin folder first on PATH, since LlamaFactory runs `torchrun` by name and another
    environment's torchrun (or none) may come first on the caller's PATH."""
    env = dict(environ)
    if not env.get("MASTER_PORT"):
        env["MASTER_PORT"] = free_port()
    bin_dir = Path(llamafactory_cli()).parent
    if bin_dir.is_absolute():
        env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")]).rstrip(os.pathsep)
    return env


def last_checkpoint(output_dir: Path) -> Path | None:
    """The `checkpoint-N` folder with the largest N that holds a trainer state, or None."""
    steps = [(int(m.group(1)), p) for p in output_dir.glob("checkpoint-*")
             if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / "trainer_state.json").is_file()]
    return max(steps)[1] if steps else None


# Recipe keys that never change the trained weights: how often the trainer logs and saves, how many
# checkpoints it keeps, and where it reports. (`save_only_model` is not one: a checkpoint without its
# optimizer state resumes to other weights.)
LOG_AND_SAVE = frozenset({"logging_steps", "save_steps", "save_strategy", "save_total_limit", "plot_loss",
                          "report_to"})


def training_key(recipe: dict) -> str:
    """What a fine-tune's weights depend on: the recipe less `LOG_AND_SAVE`, the digests of its
    dataset files, and the model's identity."""
    return fingerprint({
        "recipe": {k: v for k, v in recipe.items() if k not in LOG_AND_SAVE},
        "data": [file_digest(f) for f in dataset_files(Path(recipe["dataset_dir"]), recipe["dataset"])],
        "model": model_identity(recipe["model_name_or_path"])})


def train(name: str, recipe: dict, recipe_path: Path, log: Path, n_gpus: int | None = None,
          while_training: AbstractContextManager | None = None) -> Path:
    """Run one fine-tune of `recipe` (a complete LlamaFactory recipe); return its output_dir.
    `n_gpus`: the devices LlamaFactory will see on this node (default `visible_gpus()`); with the
    torchrun variables they give the world size that gradient accumulation is divided by.
    `while_training` is entered around the training subprocess only, not for a finished fine-tune
    (`backends.while_training`: a vLLM server sleeps meanwhile)."""
    output_dir = Path(recipe["output_dir"])
    key = training_key(recipe)
    marker = StepMarker(output_dir / "semievol_step.json", {"key": key})
    if marker.done():
        print(f"{name}: finished before, skipped ({output_dir})")
        return output_dir
    banner(f"Train: {name}")
    recipe = dict(recipe)
    env = train_env(recipe)
    launch = plan_launch(os.environ if env is None else env, visible_gpus() if n_gpus is None else n_gpus)
    if launch.torchrun:
        env = torchrun_env(os.environ if env is None else env)
        launch = dataclasses.replace(launch, master_port=env["MASTER_PORT"])  # the port chosen now
    elif unread := [k for k in ("NPROC_PER_NODE", "NNODES") if os.environ.get(k)]:
        print(f"{name}: {' and '.join(unread)} set, but LlamaFactory starts torchrun only with FORCE_TORCHRUN=1 "
              "or several visible GPUs")
    world = launch.world_size
    per_device, grad_acc, error = keep_global_batch(
        int(recipe.get("per_device_train_batch_size", 1)), int(recipe.get("gradient_accumulation_steps", 1)), world)
    if error:
        raise UserError(f"{name}: {launch.describe()}: {error}")
    print(f"{name}: {launch.describe()}; per-device batch {per_device} x gradient accumulation {grad_acc} x "
          f"{world} process{'es' if world > 1 else ''} = global batch {per_device * grad_acc * world}", flush=True)
    recipe.update(per_device_train_batch_size=per_device, gradient_accumulation_steps=grad_acc)
    started = StepMarker(output_dir / "semievol_train.json", {"key": key, "gpus": world})
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
    if recipe.get("deepspeed"):
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
