"""Loaders on realistic rows of every task, and malformed ones."""

import csv
import json

import pytest

from semievol_lf.data.loading import load_examples
from semievol_lf.data.tasks import get_task
from semievol_lf.errors import UserError

# One realistic row per task, with the released columns (extra columns are ignored).
ROWS = {
    "mmlu": {"question": "What is the SI unit of force?", "options": '["joule", "newton", "watt", "pascal"]',
             "answer": "B", "Subject": "high_school_physics"},
    "mmlu_pro": {"question": "Which clause?", "options": json.dumps([f"opt {i}" for i in range(10)]),
                 "answer": "J", "category": "law", "question_id": "70"},
    "arc": {"question": "Which is a mammal?", "options": '["shark", "whale", "trout"]', "answer": "B"},
    "fpb": {"question": "Profit rose 20%.", "options": '["negative", "neutral", "positive"]', "answer": "C",
            "gt": "positive"},
    "usmle": {"question": "A 45-year-old man...", "options": '["A drug", "B drug", "C drug", "D drug"]',
              "answer": "A", "meta_info": "step1"},
    "pubmedqa": {"question": "Context: ... Does X cause Y?", "options": '["yes", "no", "maybe"]', "answer": "a"},
    "convfinqa": {"question": "What was the change in revenue?", "answer": "-1,234.5"},
}


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("task_name", sorted(ROWS))
@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_every_task_loads_its_released_columns(tmp_path, task_name, fmt):
    task, row = get_task(task_name), ROWS[task_name]
    path = tmp_path / f"test.{fmt}"
    if fmt == "csv":
        write_csv(path, [row])
    elif fmt == "json":
        path.write_text(json.dumps([row]))
    else:
        path.write_text(json.dumps(row) + "\n")
    (ex,) = load_examples(path, task, "test")
    assert ex.question == row["question"]
    if task.has_options:
        assert ex.options == json.loads(row["options"])
        assert ex.answer == row["answer"].upper()
    else:
        assert ex.answer == "-1234.5"
    if task_name == "mmlu":
        assert ex.category == "high_school_physics"
    if task_name == "mmlu_pro":
        assert (ex.uid, ex.category) == ("70", "law")


def test_unlabeled_answers_are_never_loaded(tmp_path):
    path = write_csv(tmp_path / "unlabeled.csv", [ROWS["fpb"]])
    (ex,) = load_examples(path, get_task("fpb"), "unlabeled")
    assert ex.answer is None and "positive" not in ex.to_dict().values()


@pytest.mark.parametrize("change, message", [
    ({"options": "[negative, neutral"}, r"test.csv:2: options: not a JSON list"),
    ({"options": "[]"}, r"test.csv:2: options: needs at least 2 options"),
    ({"answer": "D"}, r"test.csv:2: answer: 'D' is not a letter A-C"),
    ({"question": "  "}, r"test.csv:2: question: empty"),
])
def test_malformed_rows_name_file_row_and_field(tmp_path, change, message):
    path = write_csv(tmp_path / "test.csv", [dict(ROWS["fpb"], **change)])
    with pytest.raises(UserError, match=message):
        load_examples(path, get_task("fpb"), "test")


def test_a_repeated_option_text_is_kept_and_reported(tmp_path):
    """Letters are positional: the released MMLU and USMLE files have such rows (issue 12); they used to be refused."""
    rows = [ROWS["fpb"], dict(ROWS["fpb"], question="Down again.", options='["up", "up", "down"]', answer="C")]
    path = write_csv(tmp_path / "test.csv", rows)
    repeated = []
    examples = load_examples(path, get_task("fpb"), "test", repeated)
    assert [(e.options, e.answer) for e in examples][1] == (["up", "up", "down"], "C")
    assert repeated == [f"{path}:3"]
    assert len(load_examples(path, get_task("fpb"), "test")) == 2  # the collector is optional


def test_missing_column_and_empty_file(tmp_path):
    path = write_csv(tmp_path / "test.csv", [{"question": "q", "answer": "A"}])
    with pytest.raises(UserError, match=r"missing column\(s\) options; found question, answer"):
        load_examples(path, get_task("arc"), "test")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty.csv: file is empty"):
        load_examples(tmp_path / "empty.csv", get_task("arc"), "test")
