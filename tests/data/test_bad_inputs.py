"""Every bad input either loads with the expected values or fails with one line naming file, row and field."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import Case, make_cases, write_bad_inputs

from semievol_lf.data.loading import load_examples
from semievol_lf.data.tasks import get_task
from semievol_lf.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
NAMES = [c.name for c in make_cases()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Case]:
    return {c.name: c for c in write_bad_inputs(tmp_path_factory.mktemp("bad_inputs"))}


def test_corpus_covers_every_format(corpus):
    assert {c.path.suffix for c in corpus.values()} == {".csv", ".json", ".jsonl"}
    assert len(NAMES) == len(set(NAMES))


@pytest.mark.parametrize("name", NAMES)
def test_load_examples(corpus, name):
    case = corpus[name]
    task = get_task(case.task)
    if case.loads is not None or case.n_rows is not None:
        examples = load_examples(case.path, task, case.split)
        if case.n_rows is not None:
            assert len(examples) == case.n_rows
        else:
            assert [(e.question, e.answer) for e in examples] == case.loads
        return
    with pytest.raises(UserError) as info:
        load_examples(case.path, task, case.split)
    message = str(info.value)
    assert "\n" not in message and len(message) < 500, message
    where = f"{case.path}:{case.line}: " if case.line else f"{case.path}: "
    assert message.startswith(where), message
    assert case.field in message, message


def prepare(source: Path, out: Path, task: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "semievol_lf.prepare", "--task", task, "--source", str(source),
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["truncated_mid_quote", "delimiter_semicolon", "latin1_in_utf8_csv", "missing_column",
                                  "empty_file", "duplicate_ids", "json_pretty_printed_error_line",
                                  "convfinqa_unbalanced_paren"])
def test_prepare_refuses_bad_input(corpus, tmp_path, name):
    case = corpus[name]
    out = tmp_path / "out"
    proc = prepare(case.path.parent, out, case.task)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: {case.path}") and case.field in line, line
    assert not out.exists()  # all splits are validated before anything is written


def test_prepare_accepts_awkward_input(corpus, tmp_path):
    """A large unlabeled set beside a tiny labeled one is SemiEvol's own setting, not a mistake: no warning."""
    out = tmp_path / "big"
    proc = prepare(corpus["unlabeled_1000x_labeled"].path.parent, out, "mmlu")
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    assert len(json.loads((out / "unlabeled.json").read_text())) == 2001
    assert all("answer" not in row for row in json.loads((out / "unlabeled.json").read_text()))

    out = tmp_path / "numbers"
    assert prepare(corpus["convfinqa_number_forms"].path.parent, out, "convfinqa").returncode == 0
    rows = json.loads((out / "labeled.json").read_text())
    assert [r["answer"] for r in rows] == ["1234.5", "-12", "0.12", "-3", "1000", "0.0025", "-0.5"]  # 12% = 0.12
    assert rows[1]["output"] == "Answer: -12"
