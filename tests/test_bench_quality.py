"""bench/quality.py without training: the generator's parameters change the task, and the
kept/all pseudo-label accuracy is computed right on a hand-made candidates file."""

import csv
import importlib.util
import json
from pathlib import Path

from semievol_lf.demo_data import DemoSpec, generate, write_demo_data

ROOT = Path(__file__).resolve().parent.parent


def _quality():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_parameters_change_the_task():
    base = generate(DemoSpec(seed=0, n_labeled=30, n_unlabeled=60, n_test=30))
    assert base == generate(DemoSpec(seed=0, n_labeled=30, n_unlabeled=60, n_test=30))  # seeded
    other_seed = generate(DemoSpec(seed=1, n_labeled=30, n_unlabeled=60, n_test=30))
    assert [r["question"] for r in other_seed["test"]] != [r["question"] for r in base["test"]]
    bigger = generate(DemoSpec(seed=0, n_labeled=45, n_unlabeled=90, n_test=40))
    assert [len(bigger[s]) for s in ("labeled", "unlabeled", "test")] == [45, 90, 40]
    fewer_words = generate(DemoSpec(seed=0, n_labeled=30, n_unlabeled=60, n_test=30, cue_words=10, fillers=12))
    words = {w for rows in fewer_words.values() for r in rows for w in r["question"].split()}
    assert len(words) <= 3 * 10 + 12 < len({w for rows in base.values() for r in rows for w in r["question"].split()})


def test_kept_accuracy_on_hand_made_candidates(tmp_path):
    q = _quality()
    source = tmp_path / "source"
    write_demo_data(source, DemoSpec(seed=3, n_labeled=6, n_unlabeled=6, n_test=3))
    with open(source / "unlabeled.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    truth = [r["answer"] for r in rows]
    wrong = {"A": "B", "B": "C", "C": "A"}
    # ids as `prepare` assigns them, in another order than the file, to test the id -> question join
    run_dir = tmp_path / "run"
    (run_dir / "data").mkdir(parents=True)
    (run_dir / "data" / "unlabeled.json").write_text(json.dumps(
        [{"id": f"unlabeled-{i}", "question": r["question"]} for i, r in reversed(list(enumerate(rows)))]))
    plan = [  # (pseudo_answer, kept)
        (truth[0], True), (truth[1], True), (wrong[truth[2]], True),  # kept: 2 of 3 right
        (truth[3], False), (wrong[truth[4]], False), ("[no answer]", False),  # all: 3 of 6 right
    ]
    cands = [{"id": f"unlabeled-{i}", "pseudo_answer": a, "kept": k} for i, (a, k) in enumerate(plan)]
    path = run_dir / "round_1" / "pseudolabel" / "candidates.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(c) + "\n" for c in cands))
    got = q.run_pseudo_accuracy(run_dir, source)
    assert got["kept"] == 3 and got["all"] == 6
    assert abs(got["kept_acc"] - 200 / 3) < 1e-9
    assert got["all_acc"] == 50.0
    assert q.mean_spread([60.0, 70.0, 80.0]) == "70.0 ± 10.0"


def test_train_overrides_are_a_full_fine_tune():
    q = _quality()
    args = q.argparse.Namespace(lr=2e-3, epochs=20.0, batch=16, train_overrides='{"num_train_epochs": 5}')
    got = q.train_overrides(args)
    assert got["finetuning_type"] == "full" and got["learning_rate"] == 2e-3
    assert got["per_device_train_batch_size"] == 16
    assert got["num_train_epochs"] == 5  # --train-overrides wins


def test_keep_variant_copies_round_outputs(tmp_path):
    q = _quality()
    run_dir = tmp_path / "run"
    (run_dir / "round_1" / "pseudolabel").mkdir(parents=True)
    (run_dir / "round_1" / "pseudolabel" / "candidates.jsonl").write_text("{}\n")
    (run_dir / "round_1" / "warmup").mkdir()
    (run_dir / "summary.json").write_text("{}")
    dest = tmp_path / "no_iwp"
    q.keep_variant(run_dir, dest)
    q.keep_variant(run_dir, dest)  # again: replaces
    assert (dest / "round_1" / "pseudolabel" / "candidates.jsonl").read_text() == "{}\n"
    assert (dest / "summary.json").is_file() and not (dest / "round_1" / "warmup").exists()
