"""Fixtures of the vLLM lane (runs in .venv-vllm: `make test-vllm`)."""

import os
import subprocess
from pathlib import Path

import pytest
from lane import MAIN_PYTHON

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tuple[str, str]:
    """(model, adapter): SEMIEVOL_TINY_MODEL / SEMIEVOL_TINY_ADAPTER when both are set, else built by
    make_fixtures.py with the main venv's python (it has peft; this venv does not)."""
    model, adapter = os.environ.get("SEMIEVOL_TINY_MODEL"), os.environ.get("SEMIEVOL_TINY_ADAPTER")
    if model and adapter:
        return model, adapter
    if not Path(MAIN_PYTHON).exists():
        pytest.skip(f"no fixtures: set SEMIEVOL_TINY_MODEL/SEMIEVOL_TINY_ADAPTER or create {MAIN_PYTHON}")
    out = tmp_path_factory.mktemp("vllm-fixtures")
    subprocess.run([MAIN_PYTHON, str(Path(__file__).with_name("make_fixtures.py")), "--out", str(out)], check=True)
    return str(out / "model"), str(out / "adapter")
