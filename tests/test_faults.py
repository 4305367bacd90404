"""The fault point the kill tests use (SEMIEVOL_FAULT): parsing, and that it stops exactly where asked."""

import os
import signal
import subprocess
import sys
import time

import pytest

from semievol_lf import faults
from semievol_lf.errors import UserError
from semievol_lf.io_utils import JsonlLog
from semievol_lf.step import run_cached

# A fake trainer: one trainer-log line every 50 ms, 40 in all.
TRAINER = """
import sys, time
for i in range(40):
    with open(sys.argv[1], "a") as f:
        f.write('{"current_steps": %d}\\n' % i)
    time.sleep(0.05)
"""


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
    assert faults.run_training("x", tmp_path, [sys.executable, "-c", "pass"]).returncode == 0


def test_stops_after_exactly_n_chunks_of_the_named_stage(monkeypatch, tmp_path):
    monkeypatch.setenv(faults.ENV, "sft/cache/generate:3:sigint")
    other = JsonlLog(tmp_path / "vanilla" / "cache" / "generate.jsonl")
    log = JsonlLog(tmp_path / "sft" / "cache" / "generate.jsonl")
    keyed = [(str(i), i) for i in range(20)]
    run_cached(lambda reqs: reqs, keyed, other, lambda r: {"r": r}, 2, "generate")  # another step: not counted
    with pytest.raises(KeyboardInterrupt):
        run_cached(lambda reqs: reqs, keyed, log, lambda r: {"r": r}, 2, "generate")
    assert len(log.load()) == 6 and len(other.load()) == 20


def test_training_fault_stops_the_trainer_and_raises(monkeypatch, tmp_path):
    monkeypatch.setenv(faults.ENV, "train:round_1_warmup:5:sigint")
    (tmp_path / "trainer_log.jsonl").write_text("{}\n" * 30)  # an earlier attempt's log is not counted
    cmd = [sys.executable, "-c", TRAINER, str(tmp_path / "trainer_log.jsonl")]
    with pytest.raises(KeyboardInterrupt):
        faults.run_training("round_1_warmup", tmp_path, cmd)
    written = (tmp_path / "trainer_log.jsonl").read_text().count("\n") - 30
    assert 5 <= written <= 7  # polled: a line more may have come; the trainer is gone
    assert faults.run_training("round_1_evolve", tmp_path, cmd).returncode == 0  # another fine-tune: untouched


def test_sigkill_mode_kills_the_trainer_and_the_process(tmp_path):
    log = tmp_path / "trainer_log.jsonl"
    code = (f"from semievol_lf import faults; import sys; "
            f"faults.run_training('w', {str(tmp_path)!r}, [sys.executable, '-c', {TRAINER!r}, {str(log)!r}])")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, faults.ENV: "train:w:3"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL and "fault injected: SEMIEVOL_FAULT=train:w:3:sigkill" in proc.stderr
    lines = log.read_text().count("\n")
    time.sleep(0.3)
    assert log.read_text().count("\n") == lines  # the trainer died with it
