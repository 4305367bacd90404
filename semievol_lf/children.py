"""Child processes (the fine-tunes, the benchmark's workers) that stop when their parent stops.

Ctrl-C in a terminal reaches the whole foreground process group, so a trainer stops with us by
itself. A signal to our process alone (`kill PID`, `timeout`, a scheduler that signals its job's
leader) reaches only us: without `stop`, the trainer would go on writing checkpoints into the
folder that the next run resumes from, with a second trainer beside it.
"""

import signal
import subprocess
import time

import psutil

SETTLE_S = 2.0  # a Ctrl-C reached the child as well: the time it has to stop by itself
GRACE_S = 30.0  # after our own Ctrl-C, the time before SIGKILL (a trainer stops at its next Python line)


def run(cmd: list[str], capture_output: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, check=False, ...)`, except that an exception while the child runs
    (KeyboardInterrupt, errors.Terminated) stops the child and its descendants before it propagates."""
    if capture_output:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with subprocess.Popen(cmd, **kwargs) as proc:
        try:
            stdout, stderr = proc.communicate()
        except BaseException:
            stop(proc)
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def stop(proc: subprocess.Popen) -> None:
    """Stop `proc` and its descendants (torchrun's workers, a trainer's) as Ctrl-C would: those still
    running after SETTLE_S get SIGINT, those still running GRACE_S later SIGKILL."""
    descendants = _descendants(proc.pid)
    try:
        alive = _wait(proc, descendants, SETTLE_S)
        alive = _descendants(proc.pid, alive)  # one started meanwhile is stopped too
        _signal(proc, alive, signal.SIGINT)
        alive = _wait(proc, alive, GRACE_S)
    except BaseException:  # a second Ctrl-C while waiting: no more patience
        _signal(proc, _descendants(proc.pid, descendants), signal.SIGKILL)
        raise
    _signal(proc, alive, signal.SIGKILL)
    _wait(proc, alive, 5.0)


def _descendants(pid: int, known: list[psutil.Process] = ()) -> list[psutil.Process]:
    """Those of `known` still running and the descendants of `pid` (after `pid` ends, its orphans are found
    only through `known`)."""
    procs = {p.pid: p for p in known if _running(p)}
    try:
        procs.update((p.pid, p) for p in psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        pass
    return list(procs.values())


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE  # an orphan's zombie waits for init
    except psutil.NoSuchProcess:
        return False


def _wait(proc: subprocess.Popen, others: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` s for `proc` (our child: Popen reaps it and keeps its status) and `others` to end;
    return those of `others` still running."""
    end = time.monotonic() + timeout
    while True:
        alive = [p for p in others if _running(p)]
        if (proc.poll() is not None and not alive) or time.monotonic() >= end:
            return alive
        time.sleep(0.05)


def _signal(proc: subprocess.Popen, others: list[psutil.Process], sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    for p in others:
        try:
            p.send_signal(sig)  # psutil checks the pid still names the same process
        except psutil.NoSuchProcess:
            pass
