"""The METEOR report: report.md with the stages' counts and the judge's tables, and plots/judge_scores.png.

    write_report(Path("runs/meteor_demo"), summary)   # -> runs/meteor_demo/report.md

`summary` is what `semievol-lf meteor run` collects (summary.json): each stage's stats and the judge's
results (judge.summarize). Same summary, same report.md. Missing values show as "–".
"""

from pathlib import Path

from ..io_utils import atomic_write_text
from ..semievol.report import MISSING, Table, _markdown, _new_figure, _no_data, _save_png
from .judge import SCORES

PLOT = "plots/judge_scores.png"


def _score(x) -> str:
    return MISSING if x is None else f"{x:.2f}"


def judge_table(results: dict) -> Table:
    """Model | mean of each criterion and overall (1-10) | valid judgments."""
    header = ["Model", *[s.capitalize() for s in SCORES], "Valid judgments"]
    rows = [[m, *[_score(r.get(s)) for s in SCORES], f"{r['valid']}/{r['n']}"]
            for m, r in results["scores"].items()]
    return header, rows


def win_table(results: dict) -> Table | None:
    """METEOR's main table: the share of questions each model wins per criterion (ties count half)."""
    wins = results.get("win_rate") or {}
    if not wins or not wins.get("compared"):
        return None
    header = ["Model", *[s.capitalize() for s in SCORES]]
    rows = [[m, *[f"{100 * wins[s][m]:.1f}%" for s in SCORES]] for m in results["models"]]
    return header, rows


def quality_table(results: dict) -> Table:
    """The guideline ablation: the judge's mean scores of the teacher's answers with and without guidelines,
    and the share of questions each set wins per criterion."""
    header, rows = judge_table(results)
    wins = results.get("win_rate") or {}
    header = ["Teacher answers", *header[1:], "Overall win rate"]
    for row, m in zip(rows, results["scores"]):
        row.append(f"{100 * wins['overall'][m]:.1f}%" if wins.get("compared") else MISSING)
    return header, rows


def stages_table(summary: dict) -> Table:
    d, r, p = summary.get("distill", {}), summary.get("refine", {}), summary.get("preferences", {})
    v = r.get("verdicts", {})
    rows = [
        ["1 distill", f"{d.get('rows', MISSING)} SFT rows from {d.get('questions', MISSING)} teacher answers"],
        ["2 refine", f"verdicts: {v.get('correct', MISSING)} correct, {v.get('incorrect', MISSING)} incorrect, "
                     f"{v.get('unreadable', MISSING)} unreadable or hedged (read as feedback); "
                     f"{r.get('accepted', MISSING)} accepted, {r.get('dropped', MISSING)} dropped after "
                     f"{r.get('max_revisions', MISSING)} revisions; {len(r.get('rounds', []))} SFT round(s) every "
                     f"{r.get('fine_tune_interval', MISSING)}"],
        ["3 preferences", f"{p.get('pairs', MISSING)} DPO pairs ({p.get('high_compute', MISSING)}), "
                          f"{p.get('same_answer', MISSING)} same-answer and {p.get('empty_answer', MISSING)} "
                          "empty dropped"],
    ]
    return ["Stage", "Data"], rows


def plot_scores(path: Path, results: dict) -> None:
    """Grouped bars: the mean of each score per model."""
    fig, ax = _new_figure()
    models = [m for m, r in results["scores"].items() if r["valid"]]
    if not models:
        _no_data(ax, "no valid judgment")
    else:
        width = 0.8 / len(models)
        for i, m in enumerate(models):
            ax.bar([x + i * width for x in range(len(SCORES))], [results["scores"][m][s] for s in SCORES],
                   width=width, label=m)
        ax.set_xticks([x + width * (len(models) - 1) / 2 for x in range(len(SCORES))],
                      [s.capitalize() for s in SCORES], fontsize=8)
        ax.set_ylim(0, 10)
        ax.set_ylabel("judge's mean score (1-10)")
        ax.legend()
    ax.set_title("LLM judge: the student with and without METEOR")
    _save_png(fig, path)


def render_markdown(summary: dict) -> str:
    results = summary["judge"]
    parts = [f"# METEOR: {summary['student']} taught by {summary['teacher']}\n\n",
             f"## Stages ({summary['domain_questions']} domain questions)\n\n", _markdown(stages_table(summary)),
             *_incomplete_section(summary),
             *_quality_section(summary),
             f"\n## The judge ({summary['judge_model']}) on {summary['test_questions']} test questions\n\n",
             _markdown(judge_table(results))]
    wins = win_table(results)
    if wins:
        parts += [f"\nWin rate per criterion ({results['win_rate']['compared']} questions both validly judged; "
                  "ties count half):\n\n", _markdown(wins)]
    parts += [f"\n![judge scores]({PLOT})\n"]
    return "".join(parts)


def _incomplete_section(summary: dict) -> list[str]:
    """The endpoints' replies kept incomplete after a retry (chat.Incomplete), when there were any."""
    counts = summary.get("incomplete_replies") or {}
    parts = [f"{name} {c.get('length', 0)} cut at the length limit, {c.get('null', 0)} null"
             for name, c in counts.items() if any(c.values())]
    return [f"\nIncomplete replies after one retry (kept as they came; see each stage's cache): "
            f"{'; '.join(parts)}.\n"] if parts else []


def _quality_section(summary: dict) -> list[str]:
    q = summary.get("quality")
    if not q:
        return []
    n = max(r["n"] for r in q["scores"].values())
    return [f"\n## Data quality: teacher answers with vs without guidelines ({n} distillation questions, "
            f"judged by {summary['judge_model']})\n\n", _markdown(quality_table(q))]


def write_report(run_dir: Path, summary: dict) -> Path:
    plot_scores(run_dir / PLOT, summary["judge"])
    path = run_dir / "report.md"
    atomic_write_text(path, render_markdown(summary))
    return path


def format_table(summary: dict) -> str:
    return _markdown(judge_table(summary["judge"]))
