"""report.py against a synthetic run folder whose numbers the test chooses and recounts itself."""

import json
import random
from pathlib import Path

import pytest

from semievol_lf.semievol.report import (
    COLORS,
    DROPPED_COLOR,
    KEPT_COLOR,
    TAU_COLOR,
    error_reduction,
    format_table,
    write_report,
)

NO_ANSWER = "[no answer]"
CATEGORIES = ("algebra", "biology", "chemistry")
# model -> (n, correct, no_answer, mean entropy); round 2 adds RAG
SPEC = {
    1: {"Vanilla": (40, 22, 3, 0.9), "SFT": (40, 26, 1, 0.6), "SemiEvol": (40, 29, 0, 0.4)},
    2: {"Vanilla": (40, 22, 3, 0.9), "SFT": (40, 27, 1, 0.6), "SemiEvol": (40, 31, 0, 0.3),
        "RAG": (40, 24, 2, 0.8)},
}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _predictions(seed: int, n: int, correct: int, no_answer: int, mean_h: float, categories=True) -> list[dict]:
    """n rows, exactly `correct` right and `no_answer` unanswered, shuffled over categories."""
    rng = random.Random(seed)
    flags = ["right"] * correct + ["none"] * no_answer + ["wrong"] * (n - correct - no_answer)
    rng.shuffle(flags)
    rows = []
    for i, flag in enumerate(flags):
        pred = {"right": "B", "wrong": "A", "none": NO_ANSWER}[flag]
        rows.append({"id": f"test-{i}", "category": CATEGORIES[i % 3] if categories else None,
                     "response": f"Answer: {pred}", "pred": pred, "gold": "B", "correct": flag == "right",
                     "entropy": None if i == 5 else abs(rng.gauss(mean_h, 0.15))})
    return rows


def _results(name: str, rows: list[dict], spec: tuple) -> dict:
    """What evaluate writes; the top-level counts are the chosen numbers, not a recount."""
    n, correct, no_answer, _ = spec
    per_cat = {}
    for c in sorted({r["category"] for r in rows if r["category"] is not None}):
        sub = [r for r in rows if r["category"] == c]
        k = sum(r["correct"] for r in sub)
        per_cat[c] = {"n": len(sub), "correct": k, "accuracy": k / len(sub)}
    hs = [r["entropy"] for r in rows if r["entropy"] is not None]
    return {"name": name, "task": "demo", "n": n, "correct": correct, "accuracy": correct / n,
            "no_answer": no_answer, "no_answer_rate": no_answer / n, "mean_entropy": sum(hs) / len(hs),
            "per_category": per_cat}


def _candidates(seed: int, n: int = 60) -> tuple[list[dict], float]:
    rng = random.Random(seed)
    hs = [abs(rng.gauss(0.5, 0.2)) for _ in range(n)]
    tau = sorted(hs)[n // 2]
    rows = []
    for i, h in enumerate(hs):
        no_answer = i % 10 == 0
        rows.append({"id": f"u-{i}", "pseudo_answer": NO_ANSWER if no_answer else "B",
                     "entropy": None if no_answer else h, "kept": not no_answer and h <= tau,
                     "reason": "no_answer" if no_answer else "kept" if h <= tau else "above_tau"})
    return rows, tau


def _stats(rows: list[dict], tau) -> dict:
    return {"unlabeled": len(rows), "kept": sum(r["kept"] for r in rows), "tau": tau, "theta": 0.5,
            "agreement_rate": 0.4, "dropped_no_answer": sum(r["reason"] == "no_answer" for r in rows),
            "extraction_failures": {"collaborate": 10, "collaborate_rate": 0.0417, "justify": 2},
            "model_calls_per_sample": 6.0, "configs": ["warm-0shot", "base-1shot"], "timings_s": {}}


def _make_run(run_dir: Path, spec=SPEC) -> dict:
    rounds = []
    for rnd, models in spec.items():
        results, preds = {}, {}
        for j, (name, s) in enumerate(models.items()):
            rows = _predictions(100 * rnd + j, *s)
            rel = f"round_{rnd}/eval/{name.lower()}/predictions.jsonl"
            _write_jsonl(run_dir / rel, rows)
            results[name], preds[name] = _results(name, rows, s), rel
        cands, tau = _candidates(rnd)
        rel = f"round_{rnd}/pseudolabel/candidates.jsonl"
        _write_jsonl(run_dir / rel, cands)
        rounds.append({"round": rnd, "results": results, "predictions": preds,
                       "pseudolabel": _stats(cands, tau), "candidates": rel})
    return {"task": "demo", "model": "tiny", "output_dir": str(run_dir), "rounds": rounds}


def _table_rows(text: str, first_header: str) -> dict[str, list[str]]:
    """Rows of the first markdown table whose header starts with `first_header`, keyed by first cell."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    out = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = cells[1:]
    return out


def _image(path: Path):
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(path)
    return np.round(img[..., :3] * 255).astype(int)


def _mask(img, hex_color: str, tol: int = 3):
    import numpy as np

    rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    return (abs(img - rgb) <= tol).all(axis=-1)


def _assert_not_blank(img) -> None:
    import numpy as np

    assert (img < 250).any(axis=-1).mean() > 0.02
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20


# ------------------------------------------------------------------------------------- tests

def test_error_reduction_matches_paper():
    assert error_reduction(0.774, 0.799) == pytest.approx(0.1106, abs=1e-4)  # MMLU, GPT-4o-mini: 11.1%
    assert error_reduction(0.934, 0.989) == pytest.approx(0.833, abs=1e-3)  # FPB: 83.3%
    assert error_reduction(1.0, 1.0) is None
    assert error_reduction(None, 0.5) is None

    def r(acc):
        return {"n": 1000, "correct": round(acc * 1000), "accuracy": acc, "no_answer": 0, "no_answer_rate": 0.0,
                "mean_entropy": None, "per_category": {}}

    table = format_table({"rounds": [{"round": 1, "results": {"Vanilla": r(0.774), "SemiEvol": r(0.799)}}]})
    assert "Error reduction (SemiEvol vs Vanilla): 11.1%" in table
    table = format_table({"rounds": [{"round": 1, "results": {"Vanilla": r(1.0), "SemiEvol": r(1.0)}}]})
    assert "Error reduction (SemiEvol vs Vanilla): –" in table


def test_report_numbers_are_recounts_of_the_predictions(tmp_path):
    summary = _make_run(tmp_path)
    md_path = write_report(tmp_path, summary)
    assert md_path == tmp_path / "report.md"
    md = md_path.read_text(encoding="utf-8")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")

    last = summary["rounds"][-1]
    table = _table_rows(md, "Model")
    assert list(table) == ["Vanilla", "SFT", "SemiEvol", "RAG"]
    recount = {}
    for name, rel in last["predictions"].items():
        rows = [json.loads(line) for line in (tmp_path / rel).read_text().splitlines()]
        n, k = len(rows), sum(1 for r in rows if r["correct"])
        none = sum(1 for r in rows if r["pred"] == NO_ANSWER)
        hs = [r["entropy"] for r in rows if r["entropy"] is not None]
        recount[name] = k / n
        assert table[name] == [f"{100 * k / n:.1f}", f"{k}/{n}", f"{100 * none / n:.1f}",
                               f"{sum(hs) / len(hs):.3f}"]
        assert f"<td>{100 * k / n:.1f}</td><td>{k}/{n}</td>" in html
        # per category, recounted
        cats = _table_rows(md, "Category")
        col = ["Vanilla", "SFT", "SemiEvol", "RAG"].index(name) + 1
        for c in CATEGORIES:
            sub = [r for r in rows if r["category"] == c]
            ck = sum(r["correct"] for r in sub)
            assert cats[c][col] == f"{100 * ck / len(sub):.1f} ({ck}/{len(sub)})"

    er = (recount["SemiEvol"] - recount["Vanilla"]) / (1 - recount["Vanilla"])
    assert f"Error reduction (SemiEvol vs Vanilla): {100 * er:.1f}%\n" in md
    assert f"{100 * er:.1f}%" in html
    assert format_table(summary) in md
    assert "## Checks" not in md  # the results agree with their files

    rounds = _table_rows(md, "Round")
    assert rounds["1"][:3] == ["55.0", "65.0", "72.5"] and rounds["1"][3] == "–"  # no RAG in round 1
    assert rounds["2"][:4] == ["55.0", "67.5", "77.5", "60.0"]

    sel = _table_rows(md, "Round | Unlabeled")
    for rnd in summary["rounds"]:
        cands = [json.loads(line) for line in (tmp_path / rnd["candidates"]).read_text().splitlines()]
        kept = sum(r["kept"] for r in cands)
        row = sel[str(rnd["round"])]
        assert row[:4] == [str(len(cands)), f"{kept} ({100 * kept / len(cands):.1f}%)",
                           f"{rnd['pseudolabel']['tau']:.3f}", "50%"]
        assert row[6] == "collaborate 10 (4.2%), justify 2"

    for name in ("entropy_test.png", "entropy_pseudo.png", "accuracy_rounds.png"):
        assert f"](plots/{name})" in md
        assert f'src="plots/{name}"' in html


def test_plots_show_their_data(tmp_path):
    import numpy as np

    summary = _make_run(tmp_path)
    write_report(tmp_path, summary)
    plots = tmp_path / "plots"

    img = _image(plots / "entropy_test.png")
    _assert_not_blank(img)
    for name in ("SFT", "SemiEvol"):
        assert _mask(img, COLORS[name]).sum() > 100, name

    img = _image(plots / "entropy_pseudo.png")
    _assert_not_blank(img)
    assert _mask(img, KEPT_COLOR).sum() > 500 and _mask(img, DROPPED_COLOR).sum() > 500
    tau_px = _mask(img, TAU_COLOR)
    assert tau_px.sum() > 50
    # the tau line is vertical and sits between the kept bars (left) and the dropped bars (right)
    main_cols = np.unique(np.nonzero(tau_px)[1], return_counts=True)
    line_x = main_cols[0][main_cols[1].argmax()]
    kept_x = np.nonzero(_mask(img, KEPT_COLOR))[1]
    dropped_x = np.nonzero(_mask(img, DROPPED_COLOR))[1]
    assert np.median(kept_x) < line_x < np.median(dropped_x)

    img = _image(plots / "accuracy_rounds.png")
    _assert_not_blank(img)
    assert _mask(img, COLORS["SemiEvol"]).sum() > 100 and _mask(img, COLORS["SFT"]).sum() > 50


def test_writing_twice_gives_the_same_files(tmp_path):
    summary = _make_run(tmp_path)
    write_report(tmp_path, summary)
    first = {p: p.read_bytes() for p in [tmp_path / "report.md", tmp_path / "report.html",
                                         *sorted((tmp_path / "plots").iterdir())]}
    write_report(tmp_path, summary)
    assert {p: p.read_bytes() for p in first} == first
    assert not [p for p in tmp_path.rglob(".*.tmp")]


def test_missing_values_and_one_round(tmp_path):
    spec = {1: {"Vanilla": (10, 4, 1, 0.5), "SFT": (10, 5, 0, 0.5), "SemiEvol": (10, 6, 0, 0.5)}}
    summary = _make_run(tmp_path, spec)
    rnd = summary["rounds"][0]
    for name in rnd["results"]:  # no categories, no entropies
        rows = [dict(r, category=None, entropy=None) for r in _predictions(1, *spec[1][name], categories=False)]
        _write_jsonl(tmp_path / rnd["predictions"][name], rows)
        rnd["results"][name].update(per_category={}, mean_entropy=None)
    (tmp_path / rnd["predictions"]["SFT"]).unlink()
    rnd["results"]["SemiEvol"]["correct"] = 7  # disagrees with its file
    rnd["pseudolabel"].update(tau=None, agreement_rate=None)
    _write_jsonl(tmp_path / rnd["candidates"], [{"id": "u-0", "pseudo_answer": NO_ANSWER, "entropy": None,
                                                 "kept": False, "reason": "no_answer"}])

    md = write_report(tmp_path, summary).read_text(encoding="utf-8")
    assert "## Accuracy per round" not in md and "## Accuracy per category" not in md
    assert _table_rows(md, "Model")["SFT"][3] == "–"
    assert _table_rows(md, "Round | Unlabeled")["1"][2:5] == ["–", "50%", "–"]
    assert "SFT: predictions file round_1/eval/sft/predictions.jsonl not found" in md
    assert "SemiEvol: round_1/eval/semievol/predictions.jsonl recounts to 6/10, results say 7/10" in md
    for name in ("entropy_test.png", "entropy_pseudo.png", "accuracy_rounds.png"):
        img = _image(tmp_path / "plots" / name)
        assert (img < 250).any(axis=-1).mean() > 0.005  # a titled placeholder at least
    assert not _mask(_image(tmp_path / "plots" / "entropy_pseudo.png"), TAU_COLOR).any()


def test_no_rounds(tmp_path):
    assert format_table({"rounds": []}) == "(no results)\n"
    md = write_report(tmp_path, {"task": "demo", "model": "tiny", "rounds": []}).read_text(encoding="utf-8")
    assert "No results." in md
