"""bench/quality.py: the generator's parameters change the task, the kept/all pseudo-label accuracy is
computed right on a hand-made candidates file, and the script runs variants (Oracle included) end to end
at the smallest size that still learns the answer format."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from semievol_lf.data.demo import DemoSpec, generate, write_demo_data

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


def test_gap_share_per_draw_over_the_run_seeds():
    q = _quality()
    recs = [{"variant": "SemiEvol", "data_seed": 0, "seed": s, "acc": a, "sft": 60.0}
            for s, a in [(0, 70.0), (1, 80.0)]]
    recs += [{"variant": "Oracle", "data_seed": 0, "seed": s, "acc": 90.0, "sft": 60.0} for s in (0, 1)]
    recs += [{"variant": "SemiEvol", "data_seed": 1, "seed": 0, "acc": 50.0, "sft": 50.0}]  # no Oracle on draw 1
    got = q.draw_summary(recs, "SemiEvol")
    assert got[0]["acc"] == 75.0 and got[0]["oracle"] == 90.0 and got[0]["share"] == 0.5
    assert got[1]["acc"] == 50.0 and got[1]["share"] != got[1]["share"]  # nan: nothing to compare with
    assert q.gap_share(55.0, 60.0, 80.0) == -0.25  # worse than SFT: a negative share
    table = q.format_table(recs)
    assert "| SemiEvol | 66.7 ± 15.0 (3) | 75.0 / 50.0 | 0.50 / - | 0.50 |" in table
    assert "| Oracle | 90.0 ± 0.0 (2) | 90.0 / - | 1.00 / - | 1.00 |" in table
    assert q.variant_dir("justify all, T=1") == "justify_all_t1" and q.variant_dir("w/o ICP") == "no_icp"


def test_oracle_trains_on_the_true_answers(tmp_path):
    from semievol_lf.data.loading import load_prepared_split
    from semievol_lf.data.prepare import prepare
    from semievol_lf.data.tasks import get_task

    q = _quality()
    source = write_demo_data(tmp_path / "source", DemoSpec(seed=2, n_labeled=6, n_unlabeled=8, n_test=3))
    prepare("demo", source, tmp_path / "data")
    task = get_task("demo")
    unlabeled = load_prepared_split(tmp_path / "data", task, "unlabeled")
    assert all(u.answer is None for u in unlabeled)  # the method's copy has no answers
    answers = q.source_answers(source / "unlabeled.csv")
    out = q.oracle_data(task, unlabeled, answers, tmp_path / "data" / "labeled.json", tmp_path / "oracle")
    rows = json.loads((out / "selected.json").read_text())
    assert [r["output"] for r in rows] == [f"Answer: {answers[u.question]}" for u in unlabeled]
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["demo_labeled"]["file_name"] == "../data/labeled.json"
    assert info["demo_selected"]["file_name"] == "selected.json"


@pytest.mark.slow
def test_variants_run_at_the_smallest_size(tmp_path, capsys):
    """`python bench/quality.py --variants ...` end to end on a small generated task and a small word-level
    model: each variant (the Oracle included) records its run, and a second call skips them. Four of the ten
    variants: a variant is a switch of RunArguments, tested where it acts (tests/semievol: test_ablations,
    test_method_logic; tests/config/test_hparams); here the harness around the runs is under test."""
    q = _quality()
    variants = [v for v in q.VARIANTS if v in {"SemiEvol", "w/o AS", "justify all, T=1", "Oracle"}]  # table order
    out, results = tmp_path / "bench", tmp_path / "RESULTS.md"
    argv = ["--seeds", "0", "--n-labeled", "36", "--n-unlabeled", "12", "--n-test", "12", "--cue-words", "6",
            "--fillers", "8", "--hidden", "64", "--layers", "1", "--epochs", "40", "--batch", "8",
            "--variants", *variants, "--out", str(out), "--results", str(results), "--write"]
    assert q.main(argv) == 0
    printed = capsys.readouterr().out
    records = json.loads((out / "results.json").read_text())["records"]
    assert [r["variant"] for r in records] == variants
    sft = {r["sft"] for r in records}
    assert len(sft) == 1  # one warm-up, one SFT evaluation, shared by the variants and the Oracle
    for r in records:
        assert 0 <= r["acc"] <= 100
        if r["variant"] != "Oracle":
            assert r["all"] == 12 and 0 < r["kept"] <= 12 and r["vanilla"] == records[0]["vanilla"]
            assert (out / "data0" / "seed0" / q.variant_dir(r["variant"]) / "summary.json").is_file()
    assert next(r for r in records if r["variant"] == "w/o AS")["kept"] >= records[0]["kept"]  # theta 1 keeps more
    answers = q.source_answers(out / "data0" / "source" / "unlabeled.csv")
    oracle = json.loads((out / "data0" / "seed0" / "run" / "oracle" / "selected.json").read_text())
    assert sorted(r["output"] for r in oracle) == sorted(f"Answer: {a}" for a in answers.values())
    table = [line for line in results.read_text().splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in table[1:]] == [f"| {v}" for v in ("Vanilla", "SFT", *variants)]
    assert set(table) <= set(printed.splitlines())
    assert q.main(argv) == 0 and "..." not in capsys.readouterr().out  # recorded runs are skipped
