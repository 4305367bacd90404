"""The METEOR report: report.md with the stages' counts and the judge's tables, and plots/judge_scores.png.

    write_report(Path("runs/meteor_demo"), summary)   # -> runs/meteor_demo/report.md

`summary` is what `semievol-lf meteor run` collects (summary.json): each stage's stats and the judge's
results (judge.summarize). Same summary, same report.md. Missing values show as "–". Not handled: a
significance test between stages (the intervals and win rates are shown; reading them is the reader's).
"""

from pathlib import Path

from ..io_utils import atomic_write_text
from ..semievol.report import MISSING, Table, _markdown, _new_figure, _no_data, _save_png
from .judge import SCORES

PLOT = "plots/judge_scores.png"
SHOWN_UNREADABLE = 3  # unreadable judgments quoted in the report


def _title(s: str) -> str:
    return "Average (of the five)" if s == "average" else s.capitalize()


def _with_interval(cell: dict) -> str:
    if cell["mean"] is None:
        return MISSING
    lo, hi = cell["interval"]
    return f"{cell['mean']:.2f} [{lo:.2f}, {hi:.2f}]"


def readable_line(results: dict) -> str:
    """"Readable judgments: 2 of 3 questions (1 asked again with the answers reshuffled; 1 unreadable: ...)"."""
    why = "; ".join(f"{n}x {reason}" for reason, n in results["unreadable_why"].items())
    return (f"Readable judgments: {results['readable']} of {results['questions']} questions ({results['retried']} "
            f"asked again with the answers reshuffled; {results['unreadable']} unreadable after that"
            f"{': ' + why if why else ''}; {results.get('justified', 0)} with a justification of every answer). "
            "Unreadable judgments are never read as scores.")


def judge_table(results: dict) -> Table:
    """Model | mean [95% bootstrap interval] of each criterion and of their average (1-10)."""
    header = ["Model", *[_title(s) for s in SCORES]]
    rows = [[m, *[_with_interval(results["scores"][m][s]) for s in SCORES]] for m in results["models"]]
    return header, rows


def pairwise_table(results: dict, score: str = "average") -> Table | None:
    """Row model's win rate over the column model on `score` (ties half), over the readably judged questions."""
    if not results["readable"]:
        return None
    models = results["models"]
    rows = [[a, *[MISSING if a == b else f"{100 * results['win_rate'][a][b][score]:.0f}%" for b in models]]
            for a in models]
    return [f"{_title(score)}: row beats column", *models], rows


def criteria_wins_table(results: dict) -> Table | None:
    """Each later model's win rate over the first (the base) per criterion: METEOR's main table."""
    models = results["models"]
    if not results["readable"] or len(models) < 2:
        return None
    first = models[0]
    rows = [[f"{m} vs {first}", *[f"{100 * results['win_rate'][m][first][s]:.0f}%" for s in SCORES]]
            for m in models[1:]]
    return ["Win rate", *[_title(s) for s in SCORES]], rows


def stages_table(summary: dict) -> Table:
    d, r, p = summary.get("distill", {}), summary.get("refine", {}), summary.get("preferences", {})
    v = r.get("verdicts", {})
    rows = [
        ["1 distill", f"{d.get('rows', MISSING)} SFT rows from {d.get('questions', MISSING)} teacher answers"],
        ["2 refine", f"verdicts: {v.get('correct', MISSING)} correct, {v.get('incorrect', MISSING)} incorrect, "
                     f"{v.get('unreadable', MISSING)} unreadable or hedged (read as feedback); "
                     f"{r.get('accepted', MISSING)} accepted, {r.get('kept_unaccepted', MISSING)} never accepted and "
                     f"kept (last attempt), {r.get('dropped', MISSING)} dropped; {r.get('attempts', MISSING)} attempts "
                     f"at most; {len(r.get('rounds', []))} SFT round(s) every {r.get('fine_tune_interval', MISSING)}"],
        ["3 self-evolve", f"{p.get('pairs', MISSING)} preference pairs (rule `{p.get('rule', MISSING)}`, greedy vs "
                          f"{p.get('samples', MISSING)} sample(s), greedy chosen in "
                          f"{p.get('greedy_chosen', MISSING)}); "
                          f"dropped: {p.get('same_answer', MISSING)} same answer, {p.get('tie', MISSING)} tie, "
                          f"{p.get('empty', MISSING)} empty"],
    ]
    return ["Stage", "Data"], rows


def plot_scores(path: Path, results: dict, title: str) -> None:
    """Grouped bars: the mean of each score per model, with its 95% interval."""
    fig, ax = _new_figure()
    if not results["readable"]:
        _no_data(ax, "no readable judgment")
    else:
        models = results["models"]
        width = 0.8 / len(models)
        for i, m in enumerate(models):
            cells = [results["scores"][m][s] for s in SCORES]
            means = [c["mean"] for c in cells]
            errors = [[c["mean"] - c["interval"][0] for c in cells], [c["interval"][1] - c["mean"] for c in cells]]
            ax.bar([x + i * width for x in range(len(SCORES))], means, width=width, yerr=errors, capsize=2, label=m)
        ax.set_xticks([x + width * (len(models) - 1) / 2 for x in range(len(SCORES))],
                      [s.capitalize() for s in SCORES], fontsize=8)
        ax.set_ylim(0, 10)
        ax.set_ylabel("judge's mean score (1-10), 95% interval")
        ax.legend(fontsize=7)
    ax.set_title(title)
    _save_png(fig, path)


def unreadable_section(rows: list[dict]) -> list[str]:
    """The first unreadable judgments, quoted with why (rows of judge/scores.jsonl)."""
    bad = [r for r in rows if not r["scores"]][:SHOWN_UNREADABLE]
    if not bad:
        return []
    lines = []
    for r in bad:
        quoted = r["judgments"][-1][:160].replace("`", "'").replace("\n", " ")
        lines.append(f"- {r['id']} ({r['problems'][-1]}): `{quoted}`")
    return ["\nUnreadable judgments (the last attempt, cut at 160 characters):\n\n", "\n".join(lines), "\n"]


def judge_section(results: dict, rows: list[dict]) -> list[str]:
    parts = [readable_line(results), "\n\n", _markdown(judge_table(results))]
    pairwise, wins = pairwise_table(results), criteria_wins_table(results)
    if pairwise:
        parts += [f"\nPairwise win rates on the average score ({results['readable']} readably judged questions; "
                  "ties count half):\n\n", _markdown(pairwise)]
    if wins and len(results["models"]) > 2:
        parts += ["\nWin rate over the first model per criterion:\n\n", _markdown(wins)]
    return parts + unreadable_section(rows)


def render_markdown(summary: dict, judge_rows: list[dict] = (), quality_rows: list[dict] = ()) -> str:
    results = summary["judge"]
    parts = [f"# METEOR: {summary['student']} taught by {summary['teacher']}\n\n",
             f"## Stages ({summary['domain_questions']} domain questions)\n\n", _markdown(stages_table(summary)),
             *_incomplete_section(summary),
             *_quality_section(summary, quality_rows),
             f"\n## The judge ({summary['judge_model']}) ranks every stage's student on {summary['test_questions']} "
             "test questions\n\nMean score per criterion [bootstrap 95% interval over the questions]; all answers to "
             "a question judged in one prompt, in a seeded shuffled order.\n\n",
             *judge_section(results, list(judge_rows)),
             f"\n![judge scores]({PLOT})\n"]
    return "".join(parts)


def _incomplete_section(summary: dict) -> list[str]:
    """The endpoints' replies kept incomplete after a retry (chat.Incomplete), when there were any."""
    counts = summary.get("incomplete_replies") or {}
    parts = [f"{name} {c.get('length', 0)} cut at the length limit, {c.get('null', 0)} null"
             for name, c in counts.items() if any(c.values())]
    return [f"\nIncomplete replies after one retry (kept as they came; see each stage's cache): "
            f"{'; '.join(parts)}.\n"] if parts else []


def _quality_section(summary: dict, rows: list[dict]) -> list[str]:
    q = summary.get("quality")
    if not q:
        return []
    return [f"\n## Data quality: teacher answers with vs without guidelines ({q['questions']} distillation "
            f"questions, judged by {summary['judge_model']})\n\n", *judge_section(q, list(rows))]


def write_report(run_dir: Path, summary: dict) -> Path:
    from ..io_utils import read_jsonl

    def rows(step: str) -> list[dict]:
        path = run_dir / step / "scores.jsonl"
        return list(read_jsonl(path)) if path.is_file() else []

    plot_scores(run_dir / PLOT, summary["judge"], "LLM judge: the student after each METEOR stage")
    path = run_dir / "report.md"
    atomic_write_text(path, render_markdown(summary, rows("judge"), rows("quality")))
    return path


def format_table(summary: dict) -> str:
    return readable_line(summary["judge"]) + "\n\n" + _markdown(judge_table(summary["judge"]))
