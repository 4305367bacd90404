"""bench/real.py's tables and plot: records of OUT/results.json in, markdown and a PNG out; nothing runs.

Rows: the baselines every seed's run folder evaluates (Vanilla, SFT [, RAG]), the method's variants (`METHOD_ROWS`,
each a `semievol-lf run` switch: bench/quality.py VARIANTS) and two controls that are not runs of the method: the
Oracle (the evolve fine-tune on the true answers) and SFT-long (the warm-up trained as long as the evolve
fine-tune). `format_table` is the cpu and gpu presets' table; `fpb_report` the fpb preset's (statistics in
bench/real_stats.py), with `plot_fpb` its figure.
"""

import math
import statistics
from pathlib import Path
from typing import NamedTuple

import quality  # bench/quality.py: gap share, mean ± spread (bench/ is on sys.path: real.py puts it there)
import real_stats  # bench/real_stats.py: bootstrap intervals, deciles, shares

from semievol_lf.io_utils import atomic_path

BASELINES = ("Vanilla", "SFT", "RAG")
METHOD_ROWS = ("SemiEvol", "w/o IWP", "w/o ICP", "w/o CL", "w/o AS")
ORACLE = "Oracle"  # not a run of the method: the evolve fine-tune on the true answers
# Not a run of the method either: the warm-up recipe (labeled rows only) trained for as many optimizer steps as
# its seed's SemiEvol evolve fine-tune, so that SemiEvol minus SFT-long is what the pseudo-labels added, not the
# longer training.
LONG_SFT = "SFT-long"
CONTROLS = (LONG_SFT, ORACLE)
FORMS = ("letter", "label")  # the released form first


class Unit(NamedTuple):
    """One finished run in results.json, and its key."""

    task: str
    form: str
    data_seed: int
    model: str
    seed: int
    variant: str


def unit_of(record: dict) -> Unit:
    """The unit of a results.json record (issue 13's records have no form or draw: letter, draw 0)."""
    return Unit(record["task"], record.get("form", "letter"), record.get("data_seed", 0), record["model"],
                record["seed"], record["variant"])


def format_table(records: list[dict], tasks: list[str], models: list[str]) -> str:
    """The cpu and gpu presets' table. One row per method; one column per (task, model): mean ± half-range over
    the seeds (runs), then the kept / all pseudo-label accuracy of the pseudo-labeling variants."""
    cols = [(t, m) for t in tasks for m in models if any(r["task"] == t and r["model"] == m for r in records)]
    head = " | ".join(f"{t} {m}: test acc % | kept / all pseudo-label acc %" for t, m in cols)
    lines = [f"| method | {head} |", "|---|" + "---|---|" * len(cols)]
    for name in [*BASELINES, *METHOD_ROWS]:
        cells = []
        for t, m in cols:
            rows = [r for r in records if r["task"] == t and r["model"] == m and r["variant"] not in CONTROLS]
            if name in METHOD_ROWS:
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


def by_row(records: list[dict], field: str) -> dict[str, dict[int, object]]:
    """row -> run seed -> value of `field` (a mapping per record: correct, no_answer, results) for the records of
    one (task, form, draw, model). A record's `SemiEvol` entry is its variant's row; the others (Vanilla, SFT,
    RAG, Oracle) are rows of their own name, the first record of a seed giving the value."""
    rows: dict[str, dict[int, object]] = {}
    for r in records:
        for key, value in r.get(field, {}).items():
            rows.setdefault(r["variant"] if key == "SemiEvol" else key, {}).setdefault(r["seed"], value)
    return rows


def summarise(records: list[dict]) -> dict[str, dict]:
    """Per row of one (task, form, draw, model), in table order: the pooled accuracy and its interval, per-seed
    accuracies, the paired difference to SFT (and, for the method's rows, to SFT-long), the gap share, extraction
    failures, pseudo-labels and losses (fractions, not %)."""
    vectors = {name: {s: [int(c) for c in v] for s, v in per.items()}
               for name, per in by_row(records, "correct").items()}
    no_answer = by_row(records, "no_answer")
    sft, oracle, long_sft = vectors.get("SFT", {}), vectors.get(ORACLE, {}), vectors.get(LONG_SFT, {})

    def pooled(per: dict, seeds: list[int]) -> list[float]:
        return real_stats.pool_seeds([per[s] for s in seeds])

    out = {}
    for name in [n for n in (*BASELINES, *METHOD_ROWS, *CONTROLS) if n in vectors]:
        per = vectors[name]
        seeds = sorted(per)
        row = {"seeds": seeds, "per_seed": [statistics.fmean(per[s]) for s in seeds],
               "ci": real_stats.bootstrap_ci(pooled(per, seeds)), "delta": None, "share": math.nan,
               "no_answer": statistics.fmean(no_answer[name][s] for s in seeds if s in no_answer.get(name, {}))
               if no_answer.get(name) else math.nan}
        common = [s for s in seeds if s in sft]
        if name != "SFT" and common:
            row["delta"] = real_stats.paired_bootstrap_ci(pooled(per, common), pooled(sft, common))
            both = [s for s in common if s in oracle]
            if both:
                row["share"] = quality.gap_share(*(statistics.fmean(pooled(v, both)) for v in (per, sft, oracle)))
        trained_as_long = [s for s in seeds if s in long_sft]
        if name in METHOD_ROWS and trained_as_long:
            row["delta_long"] = real_stats.paired_bootstrap_ci(pooled(per, trained_as_long),
                                                               pooled(long_sft, trained_as_long))
        mine = [r for r in records if r["variant"] == name]
        if mine and all("pseudo" in r for r in mine):
            pseudo = [p for r in mine for p in r["pseudo"]]
            kept = [p for p in pseudo if p[2]]
            row["pseudo"] = {"kept_acc": real_stats.share([p[1] for p in kept]), "kept": len(kept) / len(mine),
                             "all_acc": real_stats.share([p[1] for p in pseudo]), "all": len(pseudo) / len(mine),
                             "deciles": real_stats.entropy_deciles([(p[0], p[1]) for p in pseudo]),
                             "kept_deciles": real_stats.entropy_deciles([(p[0], p[2]) for p in pseudo]),
                             "no_answer_collaborate": statistics.fmean(r["no_answer"]["collaborate"] for r in mine),
                             "no_answer_justify": statistics.fmean(r["no_answer"]["self-justify"] for r in mine)}
        stage = "warm-up" if name == "SFT" else "evolve" if name in (*METHOD_ROWS, *CONTROLS) else None
        source = records if name == "SFT" else mine
        losses = [r["loss"][stage] for r in source if stage and r.get("loss", {}).get(stage)]
        if losses:
            row["loss"] = {k: statistics.fmean(x[k] for x in losses) for k in ("first", "last", "steps")
                           if all(x[k] is not None for x in losses)}
        out[name] = row
    return out


def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _ci(ci: tuple | None, signed: bool = False) -> str:
    if ci is None or math.isnan(ci[0]):
        return "-"
    sign = "+" if signed else ""
    return f"{100 * ci[0]:{sign}.1f} [{100 * ci[1]:{sign}.1f}, {100 * ci[2]:{sign}.1f}]"


def fpb_table(rows: dict[str, dict]) -> str:
    """The table of one (task, form, draw, model): one line per row of `summarise`."""
    lines = ["| row | test acc % [95% CI] | per seed | minus SFT, points [paired 95% CI] | share of the SFT -> "
             "Oracle gap | no answer % | kept / all pseudo-label acc % (kept / all per seed) | loss first -> last "
             "(steps) |", "|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        per = " / ".join(f"{s}: {_pct(a)}" for s, a in zip(row["seeds"], row["per_seed"]))
        share = "-" if math.isnan(row["share"]) else f"{row['share']:.2f}"
        p = row.get("pseudo")
        pseudo = (f"{_pct(p['kept_acc'])} / {_pct(p['all_acc'])} ({p['kept']:.0f} / {p['all']:.0f})" if p else "-")
        loss = row.get("loss")
        loss = (f"{loss['first']:.2f} -> {loss['last']:.2f} ({loss.get('steps', 0):.0f})"
                if loss and "first" in loss else "-")
        lines.append(f"| {name} | {_ci(row['ci'])} | {per} | {_ci(row['delta'], signed=True)} | {share} | "
                     f"{_pct(row['no_answer'])} | {pseudo} | {loss} |")
    return "\n".join(lines)


def decile_table(rows: dict[str, dict]) -> str:
    """Pseudo-label accuracy by entropy decile (the run seeds' pseudo-labels pooled) of each pseudo-labeling row."""
    names = [n for n, r in rows.items() if r.get("pseudo")]
    if not names:
        return ""
    lines = ["| entropy decile | " + " | ".join(f"{n}: entropy range (nats/token), n, acc %, kept %" for n in names)
             + " |", "|---|" + "---|" * len(names)]
    for i in range(max(len(rows[n]["pseudo"]["deciles"]) for n in names)):
        cells = []
        for n in names:
            d, k = rows[n]["pseudo"]["deciles"], rows[n]["pseudo"]["kept_deciles"]
            cells.append(f"{d[i]['lo']:.3f}-{d[i]['hi']:.3f}, {d[i]['n']}, {_pct(d[i]['acc'])}, {_pct(k[i]['acc'])}"
                         if i < len(d) else "-")
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_table(records: list[dict]) -> str:
    """By answer class, the run seeds pooled: the share of each row's test answers that are the class (the rest:
    nothing extractable), and its recall (the share of the class's test rows answered right); then each
    pseudo-labeling row's pseudo-labels of the class, kept and all (per seed), with the share right. A model that
    answers one class everywhere shows here, as does a selection that keeps one class. Records without the
    answers (written before they were kept) are left out."""
    recs = [r for r in records if "gold" in r]
    if not recs:
        return ""
    gold = recs[0]["gold"]
    classes = sorted(set(gold))
    predicted = by_row(recs, "predicted")
    head = " / ".join(classes)
    lines = [f"| row | answers {head} % | recall {head} % |", "|---|---|---|",
             f"| test rows | {' / '.join(_pct(gold.count(c) / len(gold)) for c in classes)} | - |"]
    for name in [n for n in (*BASELINES, *METHOD_ROWS, *CONTROLS) if n in predicted]:
        pairs = [(p, g) for preds in predicted[name].values() for p, g in zip(preds, gold)]
        share = " / ".join(_pct(sum(p == c for p, _ in pairs) / len(pairs)) for c in classes)
        recall = " / ".join(_pct(real_stats.share([p == g for p, g in pairs if g == c])) for c in classes)
        lines.append(f"| {name} | {share} | {recall} |")
    labeling = {n: [r for r in recs if r["variant"] == n and r.get("pseudo") and len(r["pseudo"][0]) == 5]
                for n in METHOD_ROWS}  # entries written before the answers were kept have 3 fields
    labeling = {n: rs for n, rs in labeling.items() if rs}
    if not labeling:
        return "\n".join(lines)
    lines += ["", f"| pseudo-labels, per seed | {' | '.join(f'{c}: kept (right %), all (right %)' for c in classes)} |",
              "|---|" + "---|" * len(classes),
              "| unlabeled rows (true answer) | " + " | ".join(
                  str(sum(p[4] == c for p in next(iter(labeling.values()))[0]["pseudo"])) for c in classes) + " |"]
    for name, rs in labeling.items():
        pseudo = [p for r in rs for p in r["pseudo"]]
        cells = []
        for c in classes:
            mine = [p for p in pseudo if p[3] == c]
            kept = [p for p in mine if p[2]]
            cells.append(f"{len(kept) / len(rs):.4g} ({_pct(real_stats.share([p[1] for p in kept]))}), "
                         f"{len(mine) / len(rs):.4g} ({_pct(real_stats.share([p[1] for p in mine]))})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def groups_of(records: list[dict]) -> dict[tuple, list[dict]]:
    """(task, form, draw, model) -> its records, in that order (forms in FORMS' order), not the order the runs
    finished in: with `--jobs 2` that order changes from one run to the next."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        u = unit_of(r)
        groups.setdefault((u.task, u.form, u.data_seed, u.model), []).append(r)
    rank = {form: i for i, form in enumerate(FORMS)}

    def order(key: tuple) -> tuple:
        task, form, draw, model = key
        return task, rank.get(form, len(FORMS)), draw, model

    return {key: groups[key] for key in sorted(groups, key=order)}


def fpb_report(records: list[dict]) -> tuple[str, dict]:
    """The markdown of the fpb preset's tables, and the summaries the plot draws."""
    parts, summaries = [], {}
    for (task, form, ds, model), recs in groups_of(records).items():
        rows = summaries[task, form, ds, model] = summarise(recs)
        parts.append(f"### {task}, {form} form, data draw {ds}, {model}\n\n{fpb_table(rows)}")
        for name, row in rows.items():
            if row.get("delta_long"):
                parts.append(f"{name} minus {LONG_SFT} (what the pseudo-labels added beyond training as long), "
                             f"points: {_ci(row['delta_long'], signed=True)} (paired 95% CI).")
        for name, row in rows.items():
            if row.get("pseudo"):
                p = row["pseudo"]
                parts.append(f"{name}: nothing extractable in {_pct(p['no_answer_collaborate'])}% of the collaborate "
                             f"responses and {_pct(p['no_answer_justify'])}% of the self-justified ones.")
        classes = class_table(recs)
        if classes:
            parts.append("By answer class (the run seeds pooled; answers of no class had nothing extractable):"
                         f"\n\n{classes}")
        deciles = decile_table(rows)
        if deciles:
            parts.append("Pseudo-label accuracy by entropy decile (lowest entropy first; the run seeds' pseudo-labels "
                         f"pooled; without the ones with nothing extractable):\n\n{deciles}")
    notes = ("Intervals: percentile bootstrap over the test rows (2000 resamples, seed 0) of the run seeds' accuracy "
             "pooled per row (each test row's share of seeds right); the paired interval resamples the same rows for "
             "the row and SFT. Gap share: (row - SFT) / (Oracle - SFT) on the seeds that have all three. No answer: "
             "the share of test answers with nothing extractable (mean over seeds). Pseudo-labels are scored against "
             "the released answers, which the method never reads. Loss: the first and last logged training loss "
             "(mean over seeds) of the row's fine-tune (SFT: the warm-up; the others: their evolve fine-tune). "
             f"{LONG_SFT}: the warm-up recipe (labeled rows only) trained for as many optimizer steps as the seed's "
             "SemiEvol evolve fine-tune.")
    return "\n\n".join([*parts, notes]), summaries


def plot_fpb(summaries: dict, path: Path) -> None:
    """Accuracy per row with its 95% interval and the per-seed values, one panel per (task, form, draw, model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summaries), figsize=(4.8 * len(summaries), 4.2), sharey=True, squeeze=False)
    for ax, ((task, form, ds, model), rows) in zip(axes[0], summaries.items()):
        names = list(rows)
        means = [100 * rows[n]["ci"][0] for n in names]
        err = [[m - 100 * rows[n]["ci"][1] for n, m in zip(names, means)],
               [100 * rows[n]["ci"][2] - m for n, m in zip(names, means)]]
        ax.bar(range(len(names)), means, yerr=err, capsize=5, color="#9db4d3", edgecolor="#34495e")
        for x, n in enumerate(names):
            k = len(rows[n]["per_seed"])
            ax.scatter([x + 0.1 * (i - (k - 1) / 2) for i in range(k)], [100 * a for a in rows[n]["per_seed"]], s=12,
                       color="#c0392b", zorder=3, label="run seeds" if x == 0 else None)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_title(f"{task}, {form} form (draw {ds}, {model})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test accuracy % (95% bootstrap interval)")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
