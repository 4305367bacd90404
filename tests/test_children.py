"""Nothing we start outlives us: children.stop and children.run on real process trees (a Python child that
starts a grandchild, as `llamafactory-cli train` starts torchrun's workers), and SIGTERM handled like Ctrl-C."""

import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from conftest import still_running

from semievol_lf import children
from semievol_lf.errors import exit_on_user_error

# The child starts a grandchild, writes its pid and sleeps; with "ignore", both ignore SIGINT.
TREE = """
import signal, subprocess, sys, time
if sys.argv[2] == "ignore":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
grand = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\\n"
                          "if sys.argv[1] == 'ignore': signal.signal(signal.SIGINT, signal.SIG_IGN)\\n"
                          "time.sleep(600)", sys.argv[2]])
with open(sys.argv[1], "w") as f:
    f.write(str(grand.pid))
time.sleep(600)
"""


def tree_cmd(pid_file, mode: str = "stop") -> list[str]:
    return [sys.executable, "-c", TREE, str(pid_file), mode]


def grandchild(pid_file, timeout: float = 30) -> psutil.Process:
    end = time.time() + timeout
    while not (pid_file.is_file() and pid_file.read_text()):
        assert time.time() < end, "the child never started its grandchild"
        time.sleep(0.05)
    return psutil.Process(int(pid_file.read_text()))


@pytest.fixture
def short_waits(monkeypatch):
    monkeypatch.setattr(children, "SETTLE_S", 0.2)
    monkeypatch.setattr(children, "GRACE_S", 1.0)


@pytest.mark.parametrize("mode", ["stop", "ignore"])
def test_stop_ends_the_child_and_its_grandchild(tmp_path, short_waits, mode):
    """A tree that stops on SIGINT stops on it; one that ignores SIGINT is SIGKILLed after GRACE_S."""
    proc = subprocess.Popen(tree_cmd(tmp_path / "pid", mode))
    grand = grandchild(tmp_path / "pid")
    children.stop(proc)
    assert proc.wait(timeout=5) == (-signal.SIGKILL if mode == "ignore" else -signal.SIGINT)
    assert not still_running([grand], within=5)  # signalled with its parent


def test_run_stops_its_tree_when_interrupted_and_returns_the_status_otherwise(tmp_path, short_waits):
    done = children.run([sys.executable, "-c", "print('out'); raise SystemExit(3)"], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (3, "out\n")

    def ctrl_c_to_us_alone():  # once the grandchild runs: SIGINT to this process only, not to its group
        grandchild(tmp_path / "pid")
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_to_us_alone, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        children.run(tree_cmd(tmp_path / "pid"))
    assert not still_running([grandchild(tmp_path / "pid")], within=5)


def test_a_sigterm_unwinds_like_ctrl_c_and_exits_143():
    """In a process of its own: without the handler, the SIGTERM would end pytest."""
    code = ("import os, signal, time\n"
            "from semievol_lf.errors import exit_on_user_error\n"
            "before = signal.getsignal(signal.SIGTERM)\n"
            "try:\n"
            "    with exit_on_user_error():\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "        time.sleep(10)  # the handler raises at the next bytecode, long before this ends\n"
            "finally:\n"
            "    assert signal.getsignal(signal.SIGTERM) is before  # set for the step only\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (143, "interrupted: finished work is saved; re-run the same "
                                                   "command to resume\n")
    with pytest.raises(SystemExit) as stopped, exit_on_user_error():
        raise KeyboardInterrupt
    assert stopped.value.code == 130
