"""The fault point the kill tests use (SEMIEVOL_FAULT): parsing, and that it stops exactly where asked."""

import os
import signal
import subprocess
import sys

import pytest
from conftest import make_sandbox

from semievol_lf import faults
from semievol_lf.errors import UserError
from semievol_lf.io_utils import JsonlLog
from semievol_lf.step import run_cached


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch):
    monkeypatch.setattr(faults, "_appended", {})


def test_parse():
    assert faults.parse("collaborate:3") == faults.Fault("collaborate", 3, "sigkill")
    assert faults.parse("sft/cache/generate:1:sigint") == faults.Fault("sft/cache/generate", 1, "sigint")
    assert faults.parse("train:round_1_warmup:5") == faults.Fault("train:round_1_warmup", 5, "sigkill")
    for bad in ("collaborate", "collaborate:0", "collaborate:x", ":3", "score:2:sighup", "train::2"):
        with pytest.raises(UserError, match="SEMIEVOL_FAULT"):
            faults.parse(bad)


def test_unset_does_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv(faults.ENV, raising=False)
    for _ in range(5):
        faults.chunk_appended(tmp_path / "cache" / "collaborate.jsonl")
    assert faults.run_training("x", [sys.executable, "-c", "pass"]).returncode == 0


def test_stops_after_exactly_n_chunks_of_the_named_stage(monkeypatch, tmp_path):
    monkeypatch.setenv(faults.ENV, "sft/cache/generate:3:sigint")
    other = JsonlLog(tmp_path / "vanilla" / "cache" / "generate.jsonl")
    log = JsonlLog(tmp_path / "sft" / "cache" / "generate.jsonl")
    keyed = [(str(i), i) for i in range(20)]
    run_cached(lambda reqs: reqs, keyed, other, lambda r: {"r": r}, 2, "generate")  # another step: not counted
    with pytest.raises(KeyboardInterrupt):
        run_cached(lambda reqs: reqs, keyed, log, lambda r: {"r": r}, 2, "generate")
    assert len(log.load()) == 6 and len(other.load()) == 20


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, tiny_model, demo_source):
    return make_sandbox(tmp_path_factory.mktemp("sandbox"), tiny_model, demo_source)


@pytest.fixture
def recipe(tmp_path, sandbox):
    """The demo warm-up recipe, complete (as the launcher writes it): 40 steps, a log line every step."""
    import yaml

    recipe = yaml.safe_load((sandbox / "recipes" / "warmup_demo.yaml").read_text())
    for key in ("model_name_or_path", "dataset_dir"):
        recipe[key] = str(sandbox / recipe[key])
    recipe.update(output_dir=str(tmp_path / "out"), num_train_epochs=10, logging_steps=1, save_steps=3)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.slow
def test_training_fault_stops_the_trainer_after_exactly_n_steps(monkeypatch, recipe, tmp_path):
    monkeypatch.setenv(faults.ENV, "train:round_1_warmup:5:sigint")
    cmd, log = ["llamafactory-cli", "train", str(recipe)], tmp_path / "train.log"
    with open(log, "w") as f, pytest.raises(KeyboardInterrupt):
        faults.run_training("round_1_warmup", cmd, stdout=f, stderr=subprocess.STDOUT)
    assert "fault injected: SEMIEVOL_FAULT=train:round_1_warmup:5:sigint at step 5" in log.read_text()
    out = tmp_path / "out"
    # Steps 1-4 were logged and step 3 checkpointed; step 5 was neither (the stop comes first).
    assert (out / "trainer_log.jsonl").read_text().count("\n") == 4
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    assert not (out / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_sigkill_mode_kills_the_trainer_and_the_process(recipe, tmp_path):
    code = (f"from semievol_lf import faults; "
            f"faults.run_training('w', ['llamafactory-cli', 'train', {str(recipe)!r}])")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, faults.ENV: "train:w:4"},
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "fault injected: SEMIEVOL_FAULT=train:w:4:sigkill at step 4" in proc.stderr
    assert proc.stderr.rstrip().endswith("fault injected: SEMIEVOL_FAULT=train:w:4:sigkill")  # then its starter
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    assert not (out / "adapter_model.safetensors").exists()


def test_another_fine_tune_is_untouched(monkeypatch, tmp_path):
    monkeypatch.setenv(faults.ENV, "train:round_1_warmup:5")
    proc = faults.run_training("round_1_evolve", [sys.executable, "-c", "print('trained')"], capture_output=True,
                               text=True)
    assert proc.returncode == 0 and proc.stdout == "trained\n"
