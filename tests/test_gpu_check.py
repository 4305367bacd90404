"""`make test-gpu` on a machine without a CUDA device: one line saying so, exit 0, and the GPU tests
reported as skipped with the reason, never as passed. (CUDA is hidden, so this holds on a GPU machine too.)"""

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

NO_CUDA = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def test_gpu_tests_are_skipped_with_the_reason():
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-m", "gpu", "tests/gpu", "-p",
                           "no:cacheprovider"], cwd=ROOT, env=NO_CUDA, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no CUDA device" in proc.stdout
    summary = proc.stdout.strip().splitlines()[-1]
    assert "skipped" in summary and "passed" not in summary and "failed" not in summary, summary


def test_make_test_gpu_says_so_in_one_line():
    venv = Path(sys.executable).parent.parent  # the environment running the tests; STAMP= skips the install step
    proc = subprocess.run(["make", "-s", "--no-print-directory", "test-gpu", f"VENV={venv}", "STAMP="], cwd=ROOT,
                          env=NO_CUDA, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        "test-gpu: no CUDA device on this machine, so no GPU test ran (tests/gpu is skipped, not passed)"]
