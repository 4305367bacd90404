"""Shared fixtures: a tiny model built once per machine, generated demo data, and a sandbox
laid out like the repository so the README's commands run unchanged."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HOME", str(ROOT / ".cache" / "hf"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
BIN = Path(sys.executable).parent
# A non-interactive shell starts a background job (`make test &`) with SIGINT ignored, and every process it
# starts inherits that: the tests that stop a tree with SIGINT, as Ctrl-C does, would wait on it for minutes
# and fail. Python's own handler here is reset to the default in every child at exec, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Small enough for seconds per step on two CPU cores, large enough to train and select.
TEST_SIZES = {"n_labeled": 30, "n_unlabeled": 24, "n_test": 24}
EPOCHS = 20  # the tiny LoRA needs ~80 steps to learn the answer format
FAST_TRAIN = [f"num_train_epochs={EPOCHS}", "logging_steps=4"]


def pytest_configure(config):
    """Under pytest-xdist (`make test`), the controlling process builds the models that tests and the commands
    they run build on first use, before the workers start: two workers building one folder would race."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        from semievol_lf.errors import UserError
        from semievol_lf.models.build import build_preset_model
        from semievol_lf.models.presets import get_preset

        build_tiny_model()
        for name in ("tiny", "tiny-word", "smollm2-135m"):  # the presets' own folders, for commands run in ROOT
            with contextlib.suppress(UserError):  # e.g. no SmolLM2 package: the `smollm2` fixture says so
                build_preset_model(name, ROOT / get_preset(name).model_name_or_path)


def build_tiny_model() -> Path:
    """The tests' tiny model, cached across test runs (the build is deterministic for the seed)."""
    from semievol_lf.models.tiny import build_model

    return build_model(ROOT / ".cache" / "test-tiny-llama", seed=0)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return build_tiny_model()


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct built by the command a user runs, once per machine (the marker makes a
    second call a no-op): `.cache/smollm2-135m`, the preset's folder."""
    folder = ROOT / ".cache" / "smollm2-135m"
    proc = subprocess.run([BIN / "semievol-lf", "model", "build", "smollm2-135m", "--out", folder],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return folder


@pytest.fixture(scope="session")
def demo_source(tmp_path_factory) -> Path:
    from semievol_lf.data.demo import DemoSpec, write_demo_data

    return write_demo_data(tmp_path_factory.mktemp("demo_source"), DemoSpec(seed=0, **TEST_SIZES))


def make_sandbox(path: Path, tiny_model: Path, demo_source: Path) -> Path:
    """A folder laid out like the repository: recipes/, data_info/, .cache/tiny-llama, data/demo."""
    from semievol_lf.data.prepare import prepare

    shutil.copytree(ROOT / "recipes", path / "recipes")
    shutil.copytree(ROOT / "data_info", path / "data_info")
    (path / ".cache").mkdir(parents=True)
    (path / ".cache" / "tiny-llama").symlink_to(tiny_model)
    prepare("demo", demo_source, path / "data" / "demo")
    return path


def run_cmd(args: list, cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def assert_stopped_by(sig: int, rc: int, stderr: str) -> None:
    """SIGKILL: killed, nothing said. SIGINT / SIGTERM: exit 130 / 143 with the one "interrupted:" line, no
    traceback."""
    import signal

    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL, stderr[-3000:]
    else:
        assert rc == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig] and "Traceback" not in stderr, stderr[-3000:]
        assert stderr.strip().splitlines()[-1].startswith("interrupted: finished work is saved"), stderr[-3000:]


def still_running(procs: list, within: float = 0.0) -> list:
    """Those of `procs` (psutil.Process) still running after up to `within` s; an orphan's zombie, waiting for
    init to reap it, has ended."""
    import time

    import psutil

    def running(p):
        try:
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    end = time.time() + within
    while (left := [p for p in procs if running(p)]) and time.time() < end:
        time.sleep(0.05)
    return left


def trainers_started(proc: subprocess.Popen, n: int = 1, timeout: float = 600) -> list:
    """The descendants of `proc` (psutil.Process) once `n` of them are `llamafactory-cli train`."""
    import time

    import psutil

    def cmdline(p):
        try:
            return " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            return ""

    end = time.time() + timeout
    while proc.poll() is None and time.time() < end:
        tree = psutil.Process(proc.pid).children(recursive=True)
        if sum("llamafactory-cli" in cmdline(p) for p in tree) >= n:
            return tree
        time.sleep(0.1)
    raise AssertionError(f"{n} trainer(s) did not start (exit status {proc.poll()})")


@pytest.fixture(scope="session")
def trained_sandbox(tmp_path_factory, tiny_model, demo_source) -> Path:
    """A sandbox whose warm-up was trained by the real `llamafactory-cli train`."""
    box = make_sandbox(tmp_path_factory.mktemp("sandbox"), tiny_model, demo_source)
    run_cmd([BIN / "llamafactory-cli", "train", "recipes/warmup_demo.yaml", *FAST_TRAIN], cwd=box)
    return box


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # e.g. a stripped environment: no torch, no CUDA
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """`gpu`-marked tests (tests/gpu, `make test-gpu`) are skipped on a machine without a CUDA device,
    with that reason: reported as skipped, never as passed. torch is imported only when some are collected."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu and not cuda_available():
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason="no CUDA device"))
