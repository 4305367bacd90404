"""`python -m semievol_lf.data.slices`: a seeded slice of a released folder that `prepare` reads like the full one."""

import csv
import subprocess
import sys

import pytest

from semievol_lf.data.prepare import prepare
from semievol_lf.data.slices import parse_sizes, sample_rows, write_slice
from semievol_lf.errors import UserError


def _write(path, rows, fields=("question", "gt", "options", "answer")):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def released(tmp_path):
    src = tmp_path / "fpb"
    src.mkdir()
    for split, n in (("labeled", 10), ("unlabeled", 30), ("test", 12)):
        _write(src / f"{split}.csv", [{"question": f"{split} sentence {i}\nwith a second line", "gt": "neutral",
                                       "options": '["negative", "neutral", "positive"]', "answer": "B"}
                                      for i in range(n)])
    return src


def test_sample_keeps_file_order_and_is_seeded():
    rows = list(range(100))
    assert sample_rows(rows, 5, seed=0) == sorted(sample_rows(rows, 5, seed=0))
    assert sample_rows(rows, 5, seed=0) == sample_rows(rows, 5, seed=0) != sample_rows(rows, 5, seed=1)
    assert sample_rows(rows[:3], 5, seed=0) == [0, 1, 2]
    assert sample_rows(rows, None, seed=0) == rows  # None: every row, in file order


def test_a_split_can_be_taken_whole(released, tmp_path):
    """`test=all` (size None): the split as released, every row in order, beside seeded samples of the others."""
    assert parse_sizes(["labeled=3", "test=all"]) == {"labeled": 3, "test": None}
    counts = write_slice(released, tmp_path / "slice", {"labeled": 3, "test": None})
    assert counts == {"labeled": 3, "test": 12}
    assert (tmp_path / "slice" / "test.csv").read_text() == (released / "test.csv").read_text().replace("\r\n", "\n")


def test_slice_is_prepared_like_the_released_folder(released, tmp_path):
    counts = write_slice(released, tmp_path / "slice", {"labeled": 4, "unlabeled": 6, "test": 50})
    assert counts == {"labeled": 4, "unlabeled": 6, "test": 12}
    with open(tmp_path / "slice" / "unlabeled.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["question", "gt", "options", "answer"]
        assert all(r["question"].endswith("\nwith a second line") for r in reader)
    assert prepare("fpb", tmp_path / "slice", tmp_path / "data").counts == counts


def test_bad_sizes_and_missing_files_are_user_errors(released, tmp_path):
    with pytest.raises(UserError, match="'labled=2' is not SPLIT=N"):
        parse_sizes(["labled=2"])
    with pytest.raises(UserError, match="is not SPLIT=N"):
        parse_sizes(["test=0"])
    with pytest.raises(UserError, match="or `all`"):
        parse_sizes(["test=every"])
    with pytest.raises(UserError, match="does not exist"):
        write_slice(tmp_path / "nowhere", tmp_path / "out", {"test": 2})
    proc = subprocess.run([sys.executable, "-m", "semievol_lf.data.slices", "--source", str(released), "--out",
                           str(tmp_path / "o"), "--sizes", "tests=3"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
