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
    fires once LlamaFactory's `trainer_log.jsonl` holds N lines written by this attempt (one line
    per `logging_steps` training steps), or when the training ends with at least N. The watcher
    polls the file, so a fast trainer may have logged a line more by then. Example:
    `train:round_1_warmup:5`.
MODE is how to stop:
  - `sigkill` (default): os.kill(own pid, SIGKILL), like `kill -9`: nothing is cleaned up, no
    `finally` runs. A training subprocess is SIGKILLed first, as `kill -9` of the process group.
  - `sigint`: raise KeyboardInterrupt where the fault fires, like Ctrl-C: the step prints its
    `interrupted:` line and exits 130. A training subprocess gets SIGINT first and is waited for.

Before stopping it prints `fault injected: SEMIEVOL_FAULT=...` on stderr, so a test can tell an
injected stop from a crash. Unset, the hooks cost one environment lookup per chunk and nothing per
training step. Not handled: faults inside a chunk (the randomized wall-clock test covers those).
"""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

ENV = "SEMIEVOL_FAULT"
MODES = ("sigkill", "sigint")
POLL_S = 0.02

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


def run_training(name: str, output_dir: Path, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Hook: `subprocess.run(cmd, **kwargs)` for the fine-tune `name` into `output_dir`; under a
    `train:NAME:N` fault, stop once its `trainer_log.jsonl` holds N lines of this attempt."""
    fault = current()
    if fault is None or fault.stage != f"train:{name}":
        return subprocess.run(cmd, check=False, **kwargs)
    trainer_log = Path(output_dir) / "trainer_log.jsonl"
    # An earlier attempt's log: LlamaFactory deletes it (overwrite_output_dir) or appends to it.
    low = _lines(trainer_log)
    proc = subprocess.Popen(cmd, **kwargs)
    while True:
        finished = proc.poll() is not None
        n = _lines(trainer_log)
        low = min(low, n)
        if n - low >= fault.n:
            _stop(fault, proc)
        if finished:
            return subprocess.CompletedProcess(cmd, proc.returncode)
        time.sleep(POLL_S)


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _stop(fault: Fault, child: subprocess.Popen | None = None) -> None:
    print(f"fault injected: {ENV}={fault.spec}", file=sys.stderr, flush=True)
    if fault.mode == "sigint":
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)  # Ctrl-C reaches the whole foreground group
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        raise KeyboardInterrupt
    if child is not None:
        child.kill()
        child.wait()
    os.kill(os.getpid(), signal.SIGKILL)
