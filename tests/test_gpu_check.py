"""`make test-gpu` on a machine without a CUDA device: one line saying so, exit 0, and the GPU tests
reported as skipped with the reason, never as passed. (CUDA is hidden, so this holds on a GPU machine too.)
When `nvidia-smi -L` lists a GPU that torch cannot use, it fails and says why, instead of "no CUDA device"."""

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


def make_test_gpu(env: dict) -> subprocess.CompletedProcess:
    venv = Path(sys.executable).parent.parent  # the environment running the tests; STAMP= skips the install step
    return subprocess.run(["make", "-s", "--no-print-directory", "test-gpu", f"VENV={venv}", "STAMP="], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=False)


def test_make_test_gpu_says_so_in_one_line():
    proc = make_test_gpu(NO_CUDA)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        "test-gpu: no CUDA device on this machine, so no GPU test ran (tests/gpu is skipped, not passed)"]


def test_a_gpu_the_driver_lists_but_torch_cannot_use_is_a_failure_with_the_reason(tmp_path):
    """A stand-in `nvidia-smi` lists a GPU (the device probe); torch sees none (no driver here; on a GPU
    machine CUDA_VISIBLE_DEVICES names no real device). That is an old driver or a CPU torch, not "no GPU"."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-00000000-0000-0000-0000-000000000000)'\n")
    smi.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
           "CUDA_VISIBLE_DEVICES": "GPU-00000000-0000-0000-0000-000000000000"}
    proc = make_test_gpu(env)
    assert proc.returncode != 0 and proc.stdout == "", proc.stdout + proc.stderr
    assert "no CUDA device" not in proc.stderr
    first, why = proc.stderr.splitlines()[:2]
    assert "nvidia-smi -L lists 1 GPU(s) but torch.cuda.is_available() is false" in first and "torch " in first
    assert "driver is older" in why and "CPU build" in why

    (tmp_path / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")  # a driver that lists nothing: no device
    assert make_test_gpu(env).stdout.startswith("test-gpu: no CUDA device on this machine")
