"""A deterministic fault point for the kill tests: stop the process the way a kill would, at an
exact place instead of after a wall-clock delay.

    SEMIEVOL_FAULT=STAGE:N[:MODE]

STAGE is what to count:
  - a cache stage, named by its cache file: `collaborate`, `justify`, `score` (pseudolabel),
    `generate`, `score` (evaluate). Leading folders pick one step of a `semievol-lf run`:
    `sft/cache/generate`, `pseudolabel/cache/score`. The fault fires right after this process
    appended its N-th chunk to a matching cache (chunks reused from an earlier run do not count;
    several matching caches count together). Example: `collaborate:3`.
  - `train:NAME`, a fine-tune of `semievol-lf run` (`train:round_1_warmup`, `train:round_2_evolve`):
    the trainer stops itself after exactly N optimizer steps of this attempt, before step N is logged
    or checkpointed (a TrainerCallback: the fine-tune then runs as `python -m semievol_lf.faults
    RECIPE`, LlamaFactory's `run_exp` in one process, instead of `llamafactory-cli train RECIPE`).
    Example: `train:round_1_warmup:5`.
MODE is how to stop:
  - `sigkill` (default): os.kill(own pid, SIGKILL), like `kill -9`: nothing is cleaned up, no
    `finally` runs. A trainer SIGKILLs itself, then the process that started it, as `kill -9` of the
    process group would.
  - `sigint`: raise KeyboardInterrupt where the fault fires, like Ctrl-C: the step prints its
    `interrupted:` line and exits 130. A trainer raises it inside its training loop, then the
    process that started it.

Before stopping it prints `fault injected: SEMIEVOL_FAULT=...` on stderr, so a test can tell an
injected stop from a crash. Unset, the hooks cost one environment lookup per chunk and nothing per
training step. Not handled: faults inside a chunk (the randomized wall-clock test covers those).
"""

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import children
from .errors import UserError

ENV = "SEMIEVOL_FAULT"
MODES = ("sigkill", "sigint")

_appended: dict[str, int] = {}  # spec -> chunks appended to matching caches by this process


@dataclass(frozen=True)
class Fault:
    stage: str  # "collaborate", "sft/cache/generate", "train:round_1_warmup"
    n: int
    mode: str = "sigkill"

    @property
    def spec(self) -> str:
        return f"{self.stage}:{self.n}:{self.mode}"


def parse(spec: str) -> Fault:
    """`collaborate:3` -> Fault("collaborate", 3, "sigkill"); `train:round_1_warmup:5:sigint` ->
    Fault("train:round_1_warmup", 5, "sigint")."""
    fields = spec.split(":")
    mode = fields.pop() if fields[-1] in MODES else "sigkill"
    if len(fields) < 2 or not fields[-1].isdigit() or int(fields[-1]) < 1 or not all(fields[:-1]):
        raise UserError(f"{ENV}={spec}: expected STAGE:N[:sigkill|sigint] with N >= 1, "
                        "e.g. collaborate:3 or train:round_1_warmup:5:sigint")
    return Fault(":".join(fields[:-1]), int(fields[-1]), mode)


def current() -> Fault | None:
    spec = os.environ.get(ENV)
    return parse(spec) if spec else None


def chunk_appended(cache: Path) -> None:
    """Hook: called after each chunk `run_cached` appended to `cache` (a cache/*.jsonl file)."""
    if not os.environ.get(ENV):
        return
    fault = current()
    want = Path(fault.stage).parts
    if fault.stage.startswith("train:") or cache.with_suffix("").parts[-len(want):] != want:
        return
    _appended[fault.spec] = _appended.get(fault.spec, 0) + 1
    if _appended[fault.spec] == fault.n:
        _stop(fault)


def run_training(name: str, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Hook: `children.run(cmd, **kwargs)` for the fine-tune `name`, `cmd` being
    `llamafactory-cli train RECIPE`; under a `train:NAME:N` fault the trainer stops after N steps."""
    fault = current()
    if fault is None or fault.stage != f"train:{name}":
        return children.run(cmd, **kwargs)
    proc = children.run([sys.executable, "-m", __name__, cmd[-1]], **kwargs)
    if proc.returncode in (-signal.SIGKILL, -signal.SIGINT, 130):  # the trainer stopped itself
        _stop(fault)
    return proc


def _train_until_fault(recipe: Path) -> None:
    """Train `recipe` like `llamafactory-cli train` on one device, stopping at the current fault."""
    import yaml
    from llamafactory.train.tuner import run_exp
    from transformers import TrainerCallback

    fault = current()

    class StopAfterSteps(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.first = state.global_step  # a resumed attempt counts from its checkpoint

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step - self.first == fault.n:
                print(f"fault injected: {ENV}={fault.spec} at step {state.global_step}", file=sys.stderr, flush=True)
                if fault.mode == "sigint":
                    raise KeyboardInterrupt
                os.kill(os.getpid(), signal.SIGKILL)

    try:
        run_exp(yaml.safe_load(recipe.read_text()), callbacks=[StopAfterSteps()])
    except KeyboardInterrupt:
        sys.exit(130)


def _stop(fault: Fault) -> None:
    print(f"fault injected: {ENV}={fault.spec}", file=sys.stderr, flush=True)
    if fault.mode == "sigint":
        raise KeyboardInterrupt
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    _train_until_fault(Path(sys.argv[1]))
