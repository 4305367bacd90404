"""A task file's data from Parquet files and from a dataset's own splits (a local snapshot laid out as on
the Hugging Face hub, read through `datasets`), checked like the text files: every row, before anything."""

import json

import pytest
from conftest import BIN, run_cmd

TASK = """\
name: sentiment
prompt: sentiment.jinja
answer_type: label
labels: [negative, positive]
columns: {question: review, answer: stars}
"""
ROWS = [{"review": f"review {i}: {'great' if i % 2 else 'awful'}", "stars": "positive" if i % 2 else "negative"}
        for i in range(12)]


def write_task(folder, extra: str = ""):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sentiment.yaml").write_text(TASK + extra)
    (folder / "sentiment.jinja").write_text('Review: {{ question }}\n{% include "_labels.jinja" %}\n')
    return folder / "sentiment.yaml"


def to_parquet(rows, path):
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows).to_parquet(str(path))


def prepare(tmp_path, task, source):
    return run_cmd([BIN / "semievol-lf", "prepare", "--task", task, "--source", source, "--out", tmp_path / "out"],
                   cwd=tmp_path, check=False)


def test_parquet_split_files_prepare_like_csv(tmp_path):
    task = write_task(tmp_path / "task")
    for split, rows in [("labeled", ROWS[:4]), ("unlabeled", ROWS[4:10]), ("test", ROWS[10:])]:
        to_parquet(rows, tmp_path / "data" / f"{split}.parquet")
    proc = prepare(tmp_path, task, tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    assert "4 labeled, 6 unlabeled, 2 test" in proc.stdout
    labeled = json.loads((tmp_path / "out/labeled.json").read_text())
    assert [r["answer"] for r in labeled] == ["negative", "positive", "negative", "positive"]
    assert labeled[1]["instruction"].startswith("Review: review 1: great\nAnswer with one of negative, positive")
    assert all("answer" not in r for r in json.loads((tmp_path / "out/unlabeled.json").read_text()))


def test_a_bad_parquet_row_is_named_by_its_row(tmp_path):
    task = write_task(tmp_path / "task")
    bad = [*ROWS[:3], {"review": "meh", "stars": "neutral"}]
    for split, rows in [("labeled", bad), ("test", ROWS[10:])]:
        to_parquet(rows, tmp_path / "data" / f"{split}.parquet")
    proc = prepare(tmp_path, task, tmp_path / "data")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "labeled.parquet:row 4: stars: 'neutral' is not one of negative, positive" in proc.stderr


@pytest.mark.parametrize("splits,counts", [
    ("{labeled: 'train[:4]', unlabeled: 'train[4:]', test: test}", "4 labeled, 6 unlabeled, 2 test"),
    ("{labeled: train, test: 'test[:1]'}", "10 labeled, unlabeled missing, 1 test"),
])
def test_a_datasets_own_splits_are_mapped_by_the_task(tmp_path, splits, counts):
    """A dataset folder as the hub lays it out (data/train-*.parquet, data/test-*.parquet): `splits` maps
    labeled / unlabeled / test to its split names or slices."""
    snapshot = tmp_path / "snapshot"
    to_parquet(ROWS[:10], snapshot / "data" / "train-00000-of-00001.parquet")
    to_parquet(ROWS[10:], snapshot / "data" / "test-00000-of-00001.parquet")
    task = write_task(tmp_path / "task", f"splits: {splits}\n")
    proc = prepare(tmp_path, task, snapshot)
    assert proc.returncode == 0, proc.stderr
    assert counts in proc.stdout
    test = json.loads((tmp_path / "out/test.json").read_text())
    assert test[0]["question"] == "review 10: awful" and test[0]["answer"] == "negative"


def test_an_unknown_split_is_one_error_line(tmp_path):
    snapshot = tmp_path / "snapshot"
    to_parquet(ROWS, snapshot / "data" / "train-00000-of-00001.parquet")
    task = write_task(tmp_path / "task", "splits: {labeled: train, test: validation}\n")
    proc = prepare(tmp_path, task, snapshot)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1 and "Traceback" not in proc.stderr
    assert f"{snapshot}[validation]: cannot read" in errors[0]
