"""The run report: report.md, its HTML twin report.html, and three plots in plots/.

    write_report(Path("runs/demo"), summary)   # -> runs/demo/report.md

`summary` is what `semievol-lf run` collects (shape below); the tables come from its results
dicts, the plots from the predictions and candidates files it names (paths relative to the
run folder). A prediction file whose recount disagrees with its results dict is flagged in
the report, not silently trusted.

    summary = {"task": str, "model": str, "rounds": [
        {"round": 1,
         "results": {"Vanilla": R, "SFT": R, "SemiEvol": R, ...},    # R: evaluate's results.json
         "predictions": {"Vanilla": "round_1/eval/vanilla/predictions.jsonl", ...},
         "pseudolabel": S,                                          # S: pseudolabel's stats.json
         "candidates": "round_1/pseudolabel/candidates.jsonl"}, ...]}

Same summary, same report.md and report.html, byte for byte. Missing values show as "–".
Not handled: comparing several runs, or significance tests between models.
"""

import html
import math
import os
from pathlib import Path

from ..io_utils import atomic_path, atomic_write_text, read_jsonl

BASELINES = ("Vanilla", "SFT", "SemiEvol")
MISSING = "–"
PLOTS = {  # file under plots/ -> caption
    "entropy_test.png": "Entropy of each model's answers on the test set (last round; paper Fig. 4)",
    "entropy_pseudo.png": "Entropy of the pseudo-responses (last round); kept where H <= tau",
    "accuracy_rounds.png": "Test accuracy per round",
}
COLORS = {"Vanilla": "#7f7f7f", "SFT": "#1f77b4", "SemiEvol": "#2ca02c"}
EXTRA_COLORS = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
KEPT_COLOR, DROPPED_COLOR, TAU_COLOR = "#2ca02c", "#b0b0b0", "#d62728"

Table = tuple[list[str], list[list[str]]]  # (header, rows of cells), rendered to markdown or HTML


# ---------------------------------------------------------------------------------- numbers

def error_reduction(acc_vanilla: float | None, acc_semievol: float | None) -> float | None:
    """Share of Vanilla's errors that SemiEvol removes (paper Table 1), None if undefined.

    >>> round(error_reduction(0.774, 0.799), 3)   # MMLU, GPT-4o-mini: 11.1%
    0.111
    """
    if acc_vanilla is None or acc_semievol is None or acc_vanilla >= 1.0:
        return None
    return (acc_semievol - acc_vanilla) / (1.0 - acc_vanilla)


def result_names(results: dict) -> list[str]:
    """Vanilla, SFT, SemiEvol first (those present), then the others (RAG, ...) by name."""
    return [n for n in BASELINES if n in results] + sorted(n for n in results if n not in BASELINES)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _pct(x, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}" if _finite(x) else MISSING


def _num(x, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if _finite(x) else MISSING


def _int(x) -> str:
    return MISSING if x is None else str(x)


def _count(r: dict) -> str:
    return f"{r['correct']}/{r['n']}" if r.get("n") is not None and r.get("correct") is not None else MISSING


def _acc(results: dict, name: str) -> float | None:
    return (results.get(name) or {}).get("accuracy")


def _er_text(results: dict) -> str:
    er = error_reduction(_acc(results, "Vanilla"), _acc(results, "SemiEvol"))
    return f"{_pct(er)}%" if er is not None else MISSING


# ---------------------------------------------------------------------------------- tables

def accuracy_table(results: dict) -> Table:
    header = ["Model", "Accuracy (%)", "Correct / n", "No answer (%)", "Mean entropy"]
    rows = [[name, _pct(r.get("accuracy")), _count(r), _pct(r.get("no_answer_rate")), _num(r.get("mean_entropy"))]
            for name, r in ((n, results[n] or {}) for n in result_names(results))]
    return header, rows


def rounds_table(rounds: list[dict]) -> Table:
    names = result_names({n: None for r in rounds for n in r.get("results", {})})
    header = ["Round", *[f"{n} (%)" for n in names], "Error reduction", "Kept pseudo-labels"]
    rows = []
    for r in rounds:
        res = r.get("results", {})
        kept = (r.get("pseudolabel") or {}).get("kept")
        rows.append([str(r.get("round", MISSING)), *[_pct(_acc(res, n)) for n in names], _er_text(res),
                     _int(kept)])
    return header, rows


def category_table(results: dict) -> Table | None:
    """Accuracy per category, "70.0 (7/10)"; None when no model has categories."""
    names = result_names(results)
    cats = sorted({c for n in names for c in ((results[n] or {}).get("per_category") or {})})
    if not cats:
        return None
    rows = []
    for c in cats:
        cells = [(results[n] or {}).get("per_category", {}).get(c) for n in names]
        n_items = next((x["n"] for x in cells if x and x.get("n") is not None), None)
        rows.append([c, _int(n_items),
                     *[f"{_pct(x.get('accuracy'))} ({_count(x)})" if x else MISSING for x in cells]])
    return ["Category", "n", *[f"{n} (%)" for n in names]], rows


def selection_table(rounds: list[dict]) -> Table | None:
    """One row per round that pseudo-labeled; None when none did."""
    header = ["Round", "Unlabeled", "Kept", "tau", "theta", "Agreement (%)", "Dropped: no answer",
              "Extraction failures", "Model calls / sample"]
    rows = []
    for r in rounds:
        s = r.get("pseudolabel")
        if not s:
            continue
        kept, n = s.get("kept"), s.get("unlabeled")
        kept_text = f"{kept} ({_pct(kept / n)}%)" if kept is not None and n else _int(kept)
        fails = s.get("extraction_failures") or {}
        fail_text = ", ".join(
            f"{k} {fails[k]}" + (f" ({_pct(fails[k + '_rate'])}%)" if _finite(fails.get(k + "_rate")) else "")
            for k in fails if not k.endswith("_rate")) or MISSING
        theta = s.get("theta")
        rows.append([str(r.get("round", MISSING)), _int(n), kept_text, _num(s.get("tau")),
                     f"{_pct(theta, 0)}%" if _finite(theta) else MISSING, _pct(s.get("agreement_rate")),
                     _int(s.get("dropped_no_answer")), fail_text, _num(s.get("model_calls_per_sample"), 2)])
    return (header, rows) if rows else None


def _markdown(table: Table) -> str:
    header, rows = table

    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, header)) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _html_table(table: Table) -> str:
    header, rows = table
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{th}</tr></thead>\n<tbody>\n{trs}</tbody>\n</table>\n"


def format_table(summary: dict) -> str:
    """The last round's accuracy table in markdown, with SemiEvol's error reduction under it."""
    rounds = summary.get("rounds") or []
    if not rounds or not rounds[-1].get("results"):
        return "(no results)\n"
    results = rounds[-1]["results"]
    return _markdown(accuracy_table(results)) + f"\nError reduction (SemiEvol vs Vanilla): {_er_text(results)}\n"


# ---------------------------------------------------------------------------------- checks

def _read_rows(run_dir: Path, rel: str | None) -> list[dict] | None:
    path = run_dir / rel if rel else None
    return list(read_jsonl(path)) if path is not None and path.is_file() else None


def _check_predictions(run_dir: Path, last: dict) -> list[str]:
    """Recount correct/n from each predictions file; one line per disagreement or missing file."""
    notes = []
    for name in result_names(last.get("results", {})):
        rel = (last.get("predictions") or {}).get(name)
        rows = _read_rows(run_dir, rel)
        if rows is None:
            notes.append(f"{name}: predictions file {rel or '(none)'} not found; not plotted")
            continue
        r = last["results"][name] or {}
        n, correct = len(rows), sum(bool(x.get("correct")) for x in rows)
        if (n, correct) != (r.get("n"), r.get("correct")):
            notes.append(f"{name}: {rel} recounts to {correct}/{n}, results say {_count(r)}")
    return notes


# ---------------------------------------------------------------------------------- plots

def _new_figure():
    # Agg canvas on a bare Figure: no display, no pyplot global state
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save_png(fig, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", metadata={"Software": None})
        f.flush()
        os.fsync(f.fileno())


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#555555")
    ax.set_xticks([])
    ax.set_yticks([])


def _bins(values: list[float], n: int = 30):
    import numpy as np

    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, n + 1)


def _color(name: str, names: list[str]) -> str:
    extras = [n for n in names if n not in COLORS]
    return COLORS.get(name) or EXTRA_COLORS[extras.index(name) % len(EXTRA_COLORS)]


def plot_entropy_test(path: Path, series: dict[str, list[float]]) -> None:
    """Step histograms (density) of the per-question entropy of each model, shared bins."""
    fig, ax = _new_figure()
    series = {n: v for n, v in series.items() if v}
    if series:
        bins = _bins([h for v in series.values() for h in v])
        names = list(series)
        for name, values in series.items():
            ax.hist(values, bins=bins, density=True, histtype="step", linewidth=2, color=_color(name, names),
                    label=f"{name} (mean {sum(values) / len(values):.3f}, n={len(values)})")
        ax.set_xlabel("entropy H (mean token NLL)")
        ax.set_ylabel("density")
        ax.legend(fontsize="small")
    else:
        _no_data(ax, "no test predictions with a finite entropy")
    ax.set_title("Answer entropy on the test set")
    fig.tight_layout()
    _save_png(fig, path)


def plot_entropy_pseudo(path: Path, kept: list[float], dropped: list[float], tau: float | None) -> None:
    """Stacked histogram of pseudo-response entropies, kept vs dropped, with tau as a vertical line."""
    fig, ax = _new_figure()
    if kept or dropped:
        ax.hist([kept, dropped], bins=_bins(kept + dropped), stacked=True, color=[KEPT_COLOR, DROPPED_COLOR],
                label=[f"kept ({len(kept)})", f"dropped ({len(dropped)})"])
        if _finite(tau):
            ax.axvline(tau, color=TAU_COLOR, linewidth=2, linestyle="--", label=f"tau = {tau:.3f}")
        ax.set_xlabel("entropy H (mean token NLL)")
        ax.set_ylabel("pseudo-responses")
        ax.legend()
    else:
        _no_data(ax, "no pseudo-responses with a finite entropy")
    ax.set_title("Pseudo-response entropy and the selection threshold")
    fig.tight_layout()
    _save_png(fig, path)


def plot_accuracy_rounds(path: Path, rounds: list[dict]) -> None:
    """SemiEvol's accuracy per round; the other models as dashed reference lines."""
    fig, ax = _new_figure()
    xs = [r.get("round", i + 1) for i, r in enumerate(rounds)]
    names = result_names({n: None for r in rounds for n in r.get("results", {})})
    plotted = False
    for name in names:
        points = [(x, 100 * a) for x, r in zip(xs, rounds) if _finite(a := _acc(r.get("results", {}), name))]
        if not points:
            continue
        px, py = zip(*points)
        color = _color(name, names)
        if name == "SemiEvol":
            ax.plot(px, py, marker="o", linewidth=2.5, color=color, label=name, zorder=3)
            for x, y in points:
                ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center")
        elif len(set(py)) == 1 and len(points) == len(rounds):
            ax.axhline(py[0], linestyle="--", linewidth=1.5, color=color, label=f"{name} ({py[0]:.1f})")
        else:
            ax.plot(px, py, linestyle="--", marker=".", linewidth=1.5, color=color, label=name)
        plotted = True
    if plotted:
        ax.set_xticks(xs)
        ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
        ax.margins(y=0.15)  # room for the value labels
        ax.set_xlabel("round")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=min(4, len(names)), fontsize="small")
    else:
        _no_data(ax, "no accuracies")
    ax.set_title("Accuracy per round")
    fig.tight_layout()
    _save_png(fig, path)


def _entropies(rows: list[dict] | None) -> list[float]:
    return [r["entropy"] for r in rows or [] if _finite(r.get("entropy"))]


def write_plots(run_dir: Path, summary: dict) -> list[str]:
    """Write the three PNGs under run_dir/plots; returns their paths relative to run_dir."""
    rounds = summary.get("rounds") or []
    last = rounds[-1] if rounds else {}
    (run_dir / "plots").mkdir(parents=True, exist_ok=True)

    preds = last.get("predictions") or {}
    series = {n: _entropies(_read_rows(run_dir, preds.get(n))) for n in result_names(preds)}
    plot_entropy_test(run_dir / "plots" / "entropy_test.png", series)

    cands = _read_rows(run_dir, last.get("candidates")) or []
    plot_entropy_pseudo(run_dir / "plots" / "entropy_pseudo.png",
                        [r["entropy"] for r in cands if r.get("kept") and _finite(r.get("entropy"))],
                        [r["entropy"] for r in cands if not r.get("kept") and _finite(r.get("entropy"))],
                        (last.get("pseudolabel") or {}).get("tau"))

    plot_accuracy_rounds(run_dir / "plots" / "accuracy_rounds.png", rounds)
    return [f"plots/{name}" for name in PLOTS]


# ---------------------------------------------------------------------------------- report

ER_DEFINITION = "Error reduction = (acc_SemiEvol - acc_Vanilla) / (1 - acc_Vanilla), as in the paper's Table 1."


def _sections(run_dir: Path, summary: dict) -> list[tuple[str, list]]:
    """(title, parts) in report order; a part is a Table, a paragraph, or a list of bullet lines.

    A section with no parts is left out; markdown and HTML render the same sections.
    """
    rounds = summary.get("rounds") or []
    last = rounds[-1] if rounds else {}
    results = last.get("results") or {}
    if not results:
        return [("Accuracy", ["No results."])]
    notes = _check_predictions(run_dir, last)
    cats = category_table(results)
    sel = selection_table(rounds)
    return [
        (f"Accuracy (round {last.get('round', len(rounds))} of {len(rounds)})",
         [accuracy_table(results), f"Error reduction (SemiEvol vs Vanilla): {_er_text(results)}", ER_DEFINITION]),
        ("Accuracy per round", [rounds_table(rounds)] if len(rounds) > 1 else []),
        ("Accuracy per category (last round)", [cats] if cats else []),
        ("Pseudo-label selection", [sel] if sel else []),
        ("Checks", [notes] if notes else []),
    ]


def _title(summary: dict) -> str:
    return f"SemiEvol report: task {summary.get('task', MISSING)}, model {summary.get('model', MISSING)}"


def render_markdown(run_dir: Path, summary: dict, plots: list[str]) -> str:
    out = [f"# {_title(summary)}\n"]
    for title, parts in _sections(run_dir, summary):
        if not parts:
            continue
        out.append(f"## {title}\n")
        for part in parts:
            if isinstance(part, tuple):
                out.append(_markdown(part))
            elif isinstance(part, list):  # bullet list
                out.append("".join(f"- {line}\n" for line in part))
            else:
                out.append(part + "\n")
    out.append("## Plots\n")
    out += [f"![{PLOTS[Path(p).name]}]({p})\n\n*{PLOTS[Path(p).name]}*\n" for p in plots]
    return "\n".join(out)


_CSS = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em}"
        "td+td{text-align:right}th{background:#f3f3f3}img{max-width:100%}")


def render_html(run_dir: Path, summary: dict, plots: list[str]) -> str:
    title = html.escape(_title(summary))
    out = ["<!DOCTYPE html>", '<html lang="en">', '<head><meta charset="utf-8">', f"<title>{title}</title>",
           f"<style>{_CSS}</style>", "</head>", "<body>", f"<h1>{title}</h1>"]
    for heading, parts in _sections(run_dir, summary):
        if not parts:
            continue
        out.append(f"<h2>{html.escape(heading)}</h2>")
        for part in parts:
            if isinstance(part, tuple):
                out.append(_html_table(part))
            elif isinstance(part, list):
                out.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in part) + "</ul>")
            else:
                out.append(f"<p>{html.escape(part)}</p>")
    out.append("<h2>Plots</h2>")
    for p in plots:
        cap = html.escape(PLOTS[Path(p).name])
        out.append(f'<figure><img src="{html.escape(p)}" alt="{cap}"><figcaption>{cap}</figcaption></figure>')
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def write_report(run_dir: Path, summary: dict) -> Path:
    """Write run_dir/report.md, run_dir/report.html and run_dir/plots/*.png; return report.md's path."""
    run_dir = Path(run_dir)
    plots = write_plots(run_dir, summary)
    atomic_write_text(run_dir / "report.html", render_html(run_dir, summary, plots))
    atomic_write_text(run_dir / "report.md", render_markdown(run_dir, summary, plots))
    return run_dir / "report.md"
