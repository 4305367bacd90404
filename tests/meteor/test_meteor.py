"""METEOR (semievol_lf/meteor): the pure logic, the checks that come before any model loads, and one real
end-to-end run of recipes/meteor_demo.yaml (SmolLM2-135M-Instruct as student, teacher and judge, real
LlamaFactory SFT and DPO) whose data the tests read back: killed once mid-refinement and resumed."""

import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_cmd
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from semievol_lf.config import build_config
from semievol_lf.errors import UserError
from semievol_lf.io_utils import read_json, read_jsonl
from semievol_lf.meteor.chat import ChatRequest, EndpointChat, preflight
from semievol_lf.meteor.config import ChatModelArguments, MeteorArguments
from semievol_lf.meteor.judge import bootstrap_interval, parse_judgment, shuffled, summarize
from semievol_lf.meteor.preferences import pick_pair
from semievol_lf.meteor.questions import demo_questions, load_questions, split_questions
from semievol_lf.meteor.refine import feedback_of, parse_verdict, rounds_due

CLI = Path(sys.executable).with_name("semievol-lf")


# ---------------------------------------------------------------------------------------------- pure logic

# hand-written teacher replies: only a clean first line `VERDICT: CORRECT` accepts an answer
@pytest.mark.parametrize("text, verdict", [
    ("VERDICT: CORRECT", "correct"), ("VERDICT: CORRECT.", "correct"), ("verdict: correct", "correct"),
    ("**VERDICT: CORRECT**", "correct"), ("**Verdict:** Correct", "correct"), ("## VERDICT: `CORRECT`", "correct"),
    ("\n\n  VERDICT:CORRECT  \n", "correct"), ("VERDICT: CORRECT\n\nThe answer is correct.", "correct"),
    ("<think>Is it right? Dropout... yes.\nVERDICT: INCORRECT? no</think>\nVERDICT: CORRECT", "correct"),
    ("<THINK>\nhmm\n</THINK>VERDICT: CORRECT", "correct"),
    ("the reasoning, its opening tag in the prompt</think>\n\nVERDICT: CORRECT", "correct"),
    ("VERDICT: INCORRECT\nYou missed regularization.", "incorrect"), ("**Verdict: incorrect**", "incorrect"),
    ("VERDICT: INCORRECT - see dropout", "incorrect"), ("<think>x</think>VERDICT: INCORRECT\nHint: ...", "incorrect"),
    # the hedged replies of issue 22, old style and in the new format
    ("The answer is generally correct; however, there are some issues.", "unreadable"),
    ("Mostly correct, but it misses the bias term.", "unreadable"), ("This is not quite correct.", "unreadable"),
    ("Almost correct, but incomplete.", "unreadable"), ("Correct.", "unreadable"), ("Incorrect.", "unreadable"),
    ("Evaluation:\n\nCorrect.", "unreadable"), ("<think>...</think>Correct.", "unreadable"),
    ("VERDICT: MOSTLY CORRECT", "unreadable"), ("VERDICT: NOT CORRECT", "unreadable"),
    ("VERDICT: PARTIALLY CORRECT\nIt misses X.", "unreadable"), ("VERDICT: CORRECT, but incomplete", "unreadable"),
    ("VERDICT: CORRECT (mostly)", "unreadable"), ("VERDICT: CORRECT-ish", "unreadable"),
    ("VERDICT: CORRECT\nMostly, though it misses the bias term.", "unreadable"),
    ("VERDICT: CORRECT\nHowever, there are some issues.", "unreadable"),
    # hostile: a verdict buried after text, both verdicts, an unclosed reasoning block, the template echoed
    ("Evaluation:\n\nVERDICT: CORRECT", "unreadable"), ("The student is wrong.\nVERDICT: CORRECT", "unreadable"),
    ("Let me check. VERDICT: CORRECT", "unreadable"), ("VERDICT: CORRECT / INCORRECT", "unreadable"),
    ("VERDICT: CORRECT\nVERDICT: INCORRECT", "unreadable"), ("VERDICT: CORRECT or VERDICT: INCORRECT", "unreadable"),
    ("<think>the answer is fine, VERDICT: CORRECT", "unreadable"), ("VERDICT:", "unreadable"),
    ("VERDICT: CORRECTNESS is hard to judge", "unreadable"), ("VERDICT: ✓", "unreadable"),
    ("", "unreadable"), ("   \n ", "unreadable"), ("Great answer", "unreadable")])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


HEDGES = ["generally correct", "mostly correct", "partially correct", "almost correct", "not quite correct",
          "largely correct", "somewhat correct", "correct but incomplete", "correct, however", "nearly correct",
          "not entirely correct", "correct with minor issues", "correct, but there are some errors"]


@settings(max_examples=300, deadline=None)
@given(hedge=st.sampled_from(HEDGES), where=st.sampled_from(["verdict", "body", "bare"]),
       case=st.sampled_from([str.lower, str.upper, str.title, str]), bold=st.booleans(), think=st.booleans(),
       tail=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_a_hedged_verdict_is_never_correct(hedge, where, case, bold, think, tail):
    """A hedge in the verdict line, after a clean CORRECT line, or as the old free-text start: never accepted."""
    hedge = case(hedge)
    line = {"verdict": f"VERDICT: {hedge}", "body": "VERDICT: CORRECT", "bare": hedge.capitalize()}[where]
    text = (f"**{line}**" if bold else line) + ("\n" + hedge + ". " + tail if where == "body" else tail)
    if think:
        text = "<think>VERDICT: CORRECT</think>\n" + text
    assert parse_verdict(text) != "correct"


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(min_size=1, max_size=30).filter(lambda t: re.sub(r"[\s*_`#>]", "", t)),
       case=st.sampled_from([str.lower, str.upper, str.title]))
def test_a_verdict_buried_after_any_text_is_unreadable(prefix, case):
    """Whatever comes before the verdict line (outside a leading reasoning block) makes the reply unreadable."""
    assume("</think>" not in prefix.lower() and not re.fullmatch(r"(?is)\W*verdict\W*:?\W*(in)?correct\W*", prefix))
    text = prefix + "\n" + case("VERDICT: CORRECT")
    assert parse_verdict(text) == "unreadable" or parse_verdict(prefix) == "incorrect"


@settings(max_examples=200, deadline=None)
@given(case=st.sampled_from([str.lower, str.upper, str.title, str]), bold=st.sampled_from(["", "**", "__", "`"]),
       think=st.text(max_size=60).filter(lambda t: "</think>" not in t.lower()),
       blank=st.sampled_from(["", "\n", "\n\n "]))
def test_a_clean_verdict_reads_in_any_case_emphasis_or_after_a_reasoning_block(case, bold, think, blank):
    for word, verdict in (("CORRECT", "correct"), ("INCORRECT", "incorrect")):
        line = f"{bold}{case('VERDICT: ' + word)}{bold}"
        assert parse_verdict(f"<think>{think}</think>{blank}{line}") == verdict
        assert parse_verdict(blank + line + ("\nMissing: X" if verdict == "incorrect" else "")) == verdict


def test_the_student_revises_from_the_feedback_without_the_verdict_line():
    assert feedback_of("VERDICT: INCORRECT\nMention dropout.") == "Mention dropout."
    assert feedback_of("<think>x</think>**VERDICT: INCORRECT**\n\nHint: L2.") == "Hint: L2."
    assert feedback_of("Mostly correct, but see X.") == "Mostly correct, but see X."  # unreadable: shown whole
    assert feedback_of("VERDICT: INCORRECT") == "VERDICT: INCORRECT"


def test_rounds_due_one_per_interval():
    assert rounds_due(10, 0, 10) == [1] and rounds_due(9, 0, 10) == [] and rounds_due(25, 1, 10) == [2]
    assert rounds_due(20, 0, 10) == [1, 2] and rounds_due(20, 2, 10) == []


# ------------------------------------------------------------------ stage 3: the pairing rule, hand-built candidates

# (answers, the greedy one first; measures (token counts or likelihoods), written by hand) -> the expected pair
@pytest.mark.parametrize("texts, measures, expected", [
    (["Dropout drops units.", "Dropout drops units at random while training, so no unit can rely on another."],
     [4, 16], (1, 0)),  # the authors' case: the longer sample is preferred over the greedy answer
    (["A long greedy answer with its reasoning spelled out.", "Short."], [10, 2], (0, 1)),  # greedy longer: chosen
    (["greedy", "sample one", "the longest sample of all three", "s"], [1, 2, 6, 1], (2, 0)),  # worst: first of ties
    (["a b", "c d"], [2, 2], "tie"),  # equal lengths: no preference (the authors' code keeps the greedy one)
    (["same text", "same text"], [2, 2], "same_answer"), (["same", "same", ""], [1, 1, 0], "same_answer"),
    (["an answer", ""], [2, 0], "empty"), (["", ""], [0, 0], "empty"),
    (["", "only the sample", "x"], [0, 3, 1], (1, 2)),  # an empty greedy answer takes no part
    ([" -1.5 likelihood", "-0.5", "-3.0"], [-1.5, -0.5, -3.0], (1, 2)),  # the likelihood rule: highest vs lowest
])
def test_the_pairing_rule_on_hand_built_candidates(texts, measures, expected):
    assert pick_pair(texts, measures) == expected


def test_the_longer_answer_is_counted_in_the_students_tokens(smollm2):
    """The lengths the rule compares are token counts of the student's tokenizer (no model loads)."""
    from semievol_lf.meteor.chat import LocalChat

    chat = LocalChat("hf", str(smollm2), "smollm2", name="student")
    # fewer characters, more tokens: digits and symbols split into many tokens
    wordy, dense = "Overfitting is memorising the training data.", "1e-3 ≈ 0.001; 2^10=1024 (≠ 1000)."
    counts = chat.count_tokens([wordy, dense])
    assert len(dense) < len(wordy) and counts[1] > counts[0] and chat._backend is None
    assert pick_pair([wordy, dense], counts) == (1, 0)


# ------------------------------------------------------------------ stage 4: hand-written judge replies

def _entry(answer, scores=(8, 7, 9, 8, 6), why="clear"):
    keys = ("accuracy", "completeness", "relevance", "coherence", "reliability")
    return {"answer": answer, **dict(zip(keys, scores)), "justification": why}


TWO = json.dumps([_entry(1), _entry(2, (3, 2, 5, 4, 1), "wrong")])
FIRST = {"accuracy": 8.0, "completeness": 7.0, "relevance": 9.0, "coherence": 8.0, "reliability": 6.0,
         "average": 7.6, "justification": "clear"}
SECOND = {"accuracy": 3.0, "completeness": 2.0, "relevance": 5.0, "coherence": 4.0, "reliability": 1.0,
          "average": 3.0, "justification": "wrong"}


@pytest.mark.parametrize("text", [
    TWO, "```json\n" + TWO + "\n```", "<think>Answer 2 is wrong. [1, 2]</think>\n" + TWO,
    "Here are my scores:\n" + TWO + "\nI hope this helps.",
    json.dumps([_entry(2, (3, 2, 5, 4, 1), "wrong"), _entry(1)]),  # any order of the entries
    TWO.replace('"accuracy"', '"Accuracy"').replace('"answer"', '"Answer"'),  # keys in any case
    TWO.replace("8, ", "8.0, ", 1), TWO + "\nSee [1] for the rubric.", json.dumps({"scores": json.loads(TWO)}),
    TWO[:-1] + ",\n]",  # a trailing comma
    json.dumps([{**_entry(1), "overall": 99}, _entry(2, (3, 2, 5, 4, 1), "wrong")]),  # other keys ignored
    # the local judge's prefill and its continuation, as the 135M judge writes it
    '[\n  {"answer": 1, "accuracy": 8, "completeness": 7, "relevance": 9, "coherence": 8, "reliability": 6, '
    '"justification": "clear"},\n  {"answer": 2, "accuracy": 3, "completeness": 2, "relevance": 5, "coherence": 4, '
    '"reliability": 1, "justification": "wrong"}\n]'])
def test_parse_judgment_reads_hand_written_judgments(text):
    assert parse_judgment(text, 2) == ([FIRST, SECOND], None)


@pytest.mark.parametrize("text, why", [
    ("Answer 1 is better. Accuracy: 8, Completeness: 7.", "no JSON list"), ("", "no JSON list"),
    (TWO[:-40], "not valid JSON"),  # cut at the length limit
    ("[{'answer': 1, 'accuracy': 8}]", "not valid JSON"), (TWO.replace("}, {", "} {"), "not valid JSON"),
    (json.dumps([_entry(1)]), "expected a list of 2 objects, got 1"),
    (json.dumps([_entry(1), _entry(2), _entry(3)]), "expected a list of 2 objects, got 3"),  # an invented answer
    (json.dumps([[_entry(1), _entry(2)]]), "expected a list of 2 objects, got 1"),
    (json.dumps([_entry(1), _entry(1)]), "`answer` must be a distinct number 1-2, got 1"),
    (json.dumps([_entry(1), _entry(3)]), "`answer` must be a distinct number 1-2, got 3"),
    (json.dumps([_entry(1), _entry(True)]), "`answer` must be a distinct number 1-2, got True"),
    (json.dumps([_entry(1), _entry("2")]), "got '2'"),
    (json.dumps([_entry(1), _entry(2, (8, 7, 9, 8, 11))]), "answer 2: `reliability` is not a number from 1 to 10"),
    (json.dumps([_entry(1), _entry(2, (0, 7, 9, 8, 6))]), "answer 2: `accuracy` is not a number from 1 to 10 (0)"),
    (json.dumps([_entry(1), _entry(2, (-8, 7, 9, 8, 6))]), "`accuracy` is not a number from 1 to 10 (-8)"),
    (json.dumps([_entry(1), _entry(2, ("8", 7, 9, 8, 6))]), "`accuracy` is not a number from 1 to 10 ('8')"),
    (json.dumps([_entry(1), _entry(2, ("8/10", 7, 9, 8, 6))]), "('8/10')"),
    (json.dumps([_entry(1), _entry(2, (True, 7, 9, 8, 6))]), "(True)"),
    (json.dumps([_entry(1), _entry(2, (None, 7, 9, 8, 6))]), "(None)"),
    (json.dumps([_entry(1), {k: v for k, v in _entry(2).items() if k != "coherence"}]), "`coherence` is not"),
    (TWO.replace('"accuracy": 3', '"accuracy": NaN'), "NaN is not a score"),
    (TWO.replace('"accuracy": 3', '"accuracy": Infinity'), "Infinity is not a score"),
    (TWO.replace('"accuracy": 3,', '"accuracy": 3, "Accuracy": 9,'), "'accuracy' given twice"),
    (TWO + "\nOn second thought:\n" + json.dumps([_entry(1, (1, 1, 1, 1, 1)), _entry(2)]), "two JSON lists"),
    (TWO[:-1] + ",] and " + json.dumps([_entry(1), _entry(2)]), "two JSON lists"),
    # the prompt's own form echoed back
    ('[\n  {"answer": 1, "accuracy": S, "completeness": S}]', "not valid JSON"),
    ("<think>" + TWO + "</think>\nAnswer 1 wins.", "no JSON list"),  # the scores only in the reasoning block
])
def test_an_unreadable_judgment_says_why_and_gives_no_score(text, why):
    scores, reason = parse_judgment(text, 2)
    assert scores is None and why in reason, reason


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300), n=st.integers(1, 4))
def test_parse_judgment_never_raises_and_never_scores_outside_1_to_10(text, n):
    scores, why = parse_judgment(text, n)
    assert (scores is None) != (why is None)
    for entry in scores or []:
        assert all(1 <= entry[c] <= 10 for c in ("accuracy", "completeness", "relevance", "coherence", "reliability"))


def _row(qid, scores, judgments=("j",), problems=(None,)):
    return {"id": qid, "scores": scores, "judgments": list(judgments), "problems": list(problems)}


def _scores(base, tuned):
    keys = ("accuracy", "completeness", "relevance", "coherence", "reliability")
    return {name: {**dict(zip(keys, values)), "average": sum(values) / 5}
            for name, values in (("base", base), ("tuned", tuned))}


def test_summary_means_intervals_win_rates_and_unreadable_counts():
    rows = [_row("1", _scores((4, 4, 4, 4, 4), (9, 4, 4, 4, 4))),
            _row("2", _scores((6, 6, 6, 6, 6), (6, 6, 6, 6, 6)), ["bad", "good"], ["not valid JSON", None]),
            _row("3", _scores((2, 2, 2, 2, 2), (8, 8, 8, 8, 8))),
            _row("4", None, ["Great!", "[oops"], ["no JSON list", "not valid JSON (cut, or not JSON)"])]
    out = summarize(rows, ["base", "tuned"], seed=1)
    assert (out["questions"], out["readable"], out["retried"], out["unreadable"]) == (4, 3, 2, 1)
    assert out["unreadable_why"] == {"not valid JSON (cut, or not JSON)": 1}  # the last attempt's reason
    base, tuned = out["scores"]["base"], out["scores"]["tuned"]
    assert base["accuracy"]["mean"] == 4.0 and tuned["accuracy"]["mean"] == pytest.approx(23 / 3)
    assert tuned["average"]["mean"] == pytest.approx((5.0 + 6.0 + 8.0) / 3)  # the unreadable question left out
    lo, hi = base["accuracy"]["interval"]
    assert 2.0 <= lo < 4.0 < hi <= 6.0  # within the values' range, around the mean
    assert out["win_rate"]["tuned"]["base"]["accuracy"] == pytest.approx(2.5 / 3)  # 1 win, 1 tie, 1 win
    assert out["win_rate"]["base"]["tuned"]["accuracy"] == pytest.approx(0.5 / 3)
    assert out["win_rate"]["tuned"]["base"]["completeness"] == pytest.approx(2 / 3)  # a tie, a tie, a win
    assert summarize(rows, ["base", "tuned"], seed=1) == out  # seeded: the same intervals every run
    none = summarize([rows[-1]], ["base", "tuned"])
    assert none["readable"] == 0 and none["scores"]["base"]["accuracy"] == {"mean": None, "interval": None}


def test_bootstrap_interval():
    assert bootstrap_interval([5.0, 5.0, 5.0], seed=0) == [5.0, 5.0] and bootstrap_interval([], seed=0) is None
    values = [1.0] * 50 + [9.0] * 50
    lo, hi = bootstrap_interval(values, seed=0)
    assert 4.0 < lo < 5.0 < hi < 6.0  # the mean's spread, not the values' (1 to 9): sd 4/sqrt(100) = 0.4


def test_answers_are_shown_in_a_seeded_order_that_varies_by_question():
    names = ["base", "distilled", "refined", "self-evolved"]
    orders = {q: shuffled(names, 42, q, "judge", 0) for q in [f"q{i}" for i in range(20)]}
    assert all(sorted(o) == sorted(names) for o in orders.values())
    assert len({tuple(o) for o in orders.values()}) > 5 and len({o[0] for o in orders.values()}) == 4
    assert shuffled(names, 42, "q1", "judge", 0) == orders["q1"]  # the same on every run


def test_the_report_counts_and_shows_unreadable_judgments():
    from semievol_lf.meteor.report import judge_section

    rows = [_row("1", _scores((4, 4, 4, 4, 4), (9, 4, 4, 4, 4))),
            _row("2", None, ["Great!", "[{`oops"], ["no JSON list", "not valid JSON (cut, or not JSON)"])]
    text = "".join(judge_section(summarize(rows, ["base", "tuned"]), rows))
    assert "Readable judgments: 1 of 2 questions (1 asked again with the answers reshuffled; 1 unreadable" in text
    assert "- 2 (not valid JSON (cut, or not JSON)): `[{'oops`" in text
    assert "| base | 4.00 [4.00, 4.00] |" in text and "| tuned | 100% | – |" in text


# ---------------------------------------------------------------------------------------------- inputs

def test_questions_file_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "q.jsonl"
    cases = [('{"question": "a"}\n{"question": ""}\n', r"q.jsonl:2: question: missing or empty"),
             ('{"question": "a"}\n{oops\n', r"q.jsonl:2: not valid JSON"),
             ('{"question": "a", "answer": "b"}\n', r"q.jsonl:1: unknown field `answer`"),
             ('{"id": 1, "question": "a"}\n{"id": "1", "question": "b"}\n', r"q.jsonl:2: id: '1' repeats line 1"),
             ('{"question": "a", "category": 3}\n', r"q.jsonl:1: category: must be a non-empty string")]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(UserError, match=message):
            load_questions(path)
    path.write_text('{"question": " What is dropout? ", "category": "DL"}\n\n{"id": "x", "question": "b"}\n')
    assert [(q.uid, q.question, q.category) for q in load_questions(path)] == [
        ("q1", "What is dropout?", "DL"), ("x", "b", None)]


def test_demo_questions_and_split():
    questions = demo_questions()
    assert len({q.uid for q in questions}) == len(questions) == 48
    assert [q.category for q in questions[:4]] == ["ML", "DL", "NLP", "CV"]
    domain, test = split_questions(questions, 3, 8)
    assert len(domain) == 8 and test == questions[-3:] and not {q.uid for q in domain} & {q.uid for q in test}
    with pytest.raises(UserError, match="`n_test`=48 leaves no domain questions"):
        split_questions(questions, 48, None)


def test_config_errors_name_the_key():
    with pytest.raises(UserError, match=r"`teacher.kindd`: unknown key.*Did you mean `kind`"):
        build_config(MeteorArguments, {"teacher": {"kindd": "openai"}})
    with pytest.raises(UserError, match=r"`teacher`: `model` is required for kind openai"):
        build_config(MeteorArguments, {"teacher": {"kind": "openai"}})
    with pytest.raises(UserError, match=r"`student`: unknown preset 'smollm3'"):
        build_config(MeteorArguments, {"student": "smollm3", "teacher": {"preset": "smollm2-135m"}})
    with pytest.raises(UserError, match=r"`teacher.kind: vllm` with the student on `backend: vllm` would put two vLLM"):
        build_config(MeteorArguments, {"backend": "vllm", "teacher": {"kind": "vllm", "preset": "smollm2-135m"}})
    with pytest.raises(UserError, match=r"`judge.kind: vllm` with the student on `backend: vllm`"):
        build_config(MeteorArguments, {"backend": "vllm", "teacher": {"kind": "openai", "model": "m"},
                                       "judge": {"kind": "vllm", "preset": "smollm2-135m"}})
    build_config(MeteorArguments, {"backend": "hf", "teacher": {"kind": "vllm", "preset": "smollm2-135m"}})
    cfg = build_config(MeteorArguments, {"teacher": {"kind": "openai", "model": "gpt-4o"}})
    assert cfg.judge_args == cfg.teacher_args  # the judge defaults to the teacher


@pytest.mark.parametrize("old, new", [("meteor_dir", "output_dir"), ("k", "num_samples"),
                                      ("max_iterations", "max_revisions")])
def test_a_renamed_key_is_one_error_naming_its_new_name(tmp_path, old, new):
    """METEOR's `k` and `max_iterations` were renamed so that `k` (ICP neighbours) and `iterations`
    (rounds) mean one thing each; its folder is `output_dir` as every command's. Refused before any work."""
    proc = run_cmd([CLI, "meteor", "run", ROOT / "recipes" / "meteor_demo.yaml", f"{old}=3",
                    f"output_dir={tmp_path / 'run'}"], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and not (tmp_path / "run").exists()
    assert proc.stderr.splitlines() == [f"error: command line: `{old}` was renamed `{new}`"]
    recipe = tmp_path / "old.yaml"  # the demo recipe as it was written before the rename
    recipe.write_text((ROOT / "recipes" / "meteor_demo.yaml").read_text().replace(f"\n{new}:", f"\n{old}:"))
    line = next(n for n, text in enumerate(recipe.read_text().splitlines(), 1) if text.startswith(f"{old}:"))
    message = f"{recipe}:{line}: `{old}` was renamed `{new}`"
    proc = run_cmd([CLI, "meteor", "run", recipe], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [f"error: {message}"]
    from semievol_lf.llamafactory.recipes import validate_recipe

    with pytest.raises(UserError, match=re.escape(message)):
        validate_recipe(recipe)


def test_demo_recipe_validates_and_the_preference_recipes_pass_llamafactorys_parser(tmp_path, smollm2):
    """Stage 3 trains SimPO (reference-free, length-normalised; no reference model), or DPO against the stage-2
    student when `dpo_overrides` asks for it; LlamaFactory's own parser accepts both."""
    from semievol_lf.llamafactory.recipes import validate_recipe
    from semievol_lf.meteor.preferences import pairwise_entry
    from semievol_lf.meteor.training import preference_recipe

    assert "ok (meteor, student smollm2-135m, teacher hf)" in validate_recipe(ROOT / "recipes" / "meteor_demo.yaml")
    values = yaml.safe_load((ROOT / "recipes" / "meteor_demo.yaml").read_text())
    pairs = [{"instruction": "q", "input": "", "chosen": "a", "rejected": "b"}]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"prefs": pairwise_entry("pairs.json")}))
    for overrides, loss in (({}, "simpo"), ({"pref_loss": "sigmoid", "pref_beta": 0.1}, "sigmoid")):
        cfg = build_config(MeteorArguments, {**values, "dpo_overrides": {**values["dpo_overrides"], **overrides}})
        recipe = preference_recipe(cfg, tmp_path, "prefs", tmp_path / "dpo", previous=tmp_path / "refined")
        recipe["model_name_or_path"] = str(smollm2)
        (tmp_path / f"{loss}.yaml").write_text(yaml.safe_dump(recipe))
        assert "ok (dpo, dataset prefs" in validate_recipe(tmp_path / f"{loss}.yaml")
        assert recipe["stage"] == "dpo" and recipe["pref_loss"] == loss
        assert recipe["adapter_name_or_path"] == str(tmp_path / "refined")
        if loss == "simpo":  # the authors' margin 0, and no reference model
            assert recipe["simpo_gamma"] == 0.0 and recipe["pref_beta"] == 1.0 and "ref_model" not in recipe
        else:  # DPO moves away from the stage-2 student
            assert recipe["ref_model_adapters"] == str(tmp_path / "refined") and "simpo_gamma" not in recipe


def test_meteor_trains_each_stage_with_its_own_settings(tmp_path):
    """The authors' full fine-tune values (finetune.py, self_training.py), a LoRA fine-tune at ten times the
    learning rate; the recipe's overrides come last."""
    from semievol_lf.meteor.training import meteor_train, preference_recipe, sft_recipe

    full = {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 8, "cutoff_len": 512}
    assert meteor_train("distill", "full") == {**full, "learning_rate": 3e-5, "num_train_epochs": 3.0}
    assert meteor_train("refine", "full") == {**full, "learning_rate": 3e-5, "num_train_epochs": 1.0}
    assert meteor_train("self_evolve", "full") == {**full, "learning_rate": 1e-5, "num_train_epochs": 1.0}
    assert meteor_train("distill", "lora")["learning_rate"] == 3e-4
    assert meteor_train("self_evolve", "lora")["learning_rate"] == 1e-4
    cfg = build_config(MeteorArguments, {"teacher": {"preset": "smollm2-135m"},
                                         "train_overrides": {"learning_rate": 1e-3}})
    distill = sft_recipe(cfg, "distill", tmp_path, "d", tmp_path / "sft")
    refine_round = sft_recipe(cfg, "refine", tmp_path, "r", tmp_path / "r1", previous=tmp_path / "sft")
    assert (distill["num_train_epochs"], refine_round["num_train_epochs"]) == (3.0, 1.0)
    assert distill["learning_rate"] == refine_round["learning_rate"] == 1e-3  # the override wins
    assert distill["gradient_accumulation_steps"] == 8 and distill["cutoff_len"] == 512
    assert distill["bf16"] is False and distill["lora_rank"] == 16  # the preset's hardware settings stay
    assert preference_recipe(cfg, tmp_path, "p", tmp_path / "dpo", previous=tmp_path / "r1")["learning_rate"] == 1e-4


def test_a_prompt_longer_than_the_context_is_one_error_before_the_model_loads(tmp_path, tiny_model):
    """LocalChat checks the prompts still to compute (template and prefill included) against `cutoff_len`;
    a cached one is not checked again, and nothing loads before the check."""
    from semievol_lf.io_utils import JsonlLog
    from semievol_lf.meteor.chat import LocalChat, cached_chat

    chat = LocalChat("hf", str(tiny_model), "default", name="student", cutoff_len=16)
    short, long = ChatRequest("Hi?", 0), ChatRequest("Explain overfitting " * 20, 0)
    log = JsonlLog(tmp_path / "cache" / "x.jsonl")
    with pytest.raises(UserError, match=r"guidelines \(student\): 1 prompt\(s\) are longer than `cutoff_len` "
                                        r"\(16 tokens\), the longest \d+ tokens \(q2\); raise `cutoff_len`"):
        cached_chat(chat, [("q1", short), ("q2", long)], log, "guidelines")
    assert chat._backend is None and not log.load()  # refused before any model loaded or any request ran
    assert len(chat._prompt_ids(long)) > 16 >= len(chat._prompt_ids(short))
    log.append([{"key": "q2", "text": "cached"}])  # as a run with a larger cutoff_len left it
    assert cached_chat(chat, [("q2", long)], log, "guidelines") == {"q2": "cached"} and chat._backend is None
    # the whole run: one error naming the stage, before any model loads
    out = tmp_path / "run"
    proc = run_cmd([CLI, "meteor", "run", ROOT / "recipes" / "meteor_demo.yaml", f"output_dir={out}", "student=tiny",
                    f"student_model_name_or_path={tiny_model}", "cutoff_len=12", "stop_after=guidelines"],
                   cwd=ROOT, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "guidelines (student): 8 prompt(s) are longer than `cutoff_len` (12 tokens)" in proc.stderr
    assert not (out / "guidelines" / "guidelines.jsonl").exists()


# ---------------------------------------------------------------------------------------------- endpoints

def test_missing_api_key_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.delenv("METEOR_TEST_KEY", raising=False)
    args = ChatModelArguments(kind="openai", model="gpt-4o", api_key_env="METEOR_TEST_KEY")
    with pytest.raises(UserError, match=r"`teacher.api_key_env`: the environment variable METEOR_TEST_KEY is not set"):
        preflight(args, "teacher")
    # the whole command: exit 2 with one error line, nothing written
    proc = run_cmd([CLI, "meteor", "run", ROOT / "recipes" / "meteor_demo.yaml", f"output_dir={tmp_path / 'run'}",
                    "teacher={kind: openai, model: gpt-4o, api_key_env: METEOR_TEST_KEY}"], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "METEOR_TEST_KEY is not set" in proc.stderr and not (tmp_path / "run").exists()


def test_a_teacher_that_stays_down_is_refused_before_any_work(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    teacher = (f"teacher={{kind: openai, model: m, base_url: 'http://127.0.0.1:{port}/v1', api_key_env: null, "
               "max_retries: 2, backoff: 0.01}")
    start = time.monotonic()
    proc = run_cmd([CLI, "meteor", "run", ROOT / "recipes" / "meteor_demo.yaml", f"output_dir={tmp_path / 'run'}",
                    teacher], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and not (tmp_path / "run").exists()
    assert f"teacher at http://127.0.0.1:{port}/v1 unreachable after 3 tries" in proc.stderr
    assert time.monotonic() - start < 60


class _JsonHandler(BaseHTTPRequestHandler):
    """The stand-in chat servers' plumbing: quiet, JSON in and out."""

    def log_message(self, *args):
        pass

    def _body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def _send(self, code: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _reply(self, content: str | None, finish: str = "stop"):
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": finish}]})


class _StubChat(_JsonHandler):
    """A hosted chat API cannot run here: this answers /v1/models and /v1/chat/completions as one does,
    failing the first completion with 503 (retried), and records the requests."""

    seen: list = []
    fail_first = [True]

    def do_GET(self):
        self._send(200, {"data": [{"id": "teacher-model"}]})

    def do_POST(self):
        body = self._body()
        type(self).seen.append((self.headers.get("Authorization"), body))
        if self.fail_first[0]:
            self.fail_first[0] = False
            return self._send(503, {"error": {"message": "overloaded"}})
        self._send(200, {"choices": [{"message": {"role": "assistant",
                                                  "content": " echo: " + body["messages"][0]["content"]}}]})


def test_endpoint_chat_protocol_key_and_retries(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("METEOR_TEST_KEY", "sk-test")
        args = ChatModelArguments(kind="openai", model="teacher-model", api_key_env="METEOR_TEST_KEY",
                                  base_url=f"http://127.0.0.1:{server.server_port}/v1", backoff=0.01)
        preflight(args, "teacher")
        chat = EndpointChat(args)
        try:
            out = chat.generate([ChatRequest("q1", seed=1, max_new_tokens=5), ChatRequest("q2", seed=2)])
        finally:
            chat.close()
        assert sorted(out) == ["echo: q1", "echo: q2"] and out[0] == "echo: q1"
        auth, body = _StubChat.seen[-1]
        assert auth == "Bearer sk-test" and body["model"] == "teacher-model" and body["messages"][0]["role"] == "user"
        assert len(_StubChat.seen) == 3  # one 503, retried
        with pytest.raises(UserError, match="does not serve 'other'"):
            preflight(ChatModelArguments(kind="openai", model="other", api_key_env=None, base_url=args.base_url),
                      "judge")
    finally:
        server.shutdown()


class _ReasoningStub(_JsonHandler):
    """A stand-in for a hosted reasoning model: records every request's body and answers by the prompt:
    `null-once` / `null-always`: content null (the first time / always); `cut-once` / `cut-always`: finish_reason
    "length" with half an answer; anything else: a normal reply."""

    seen: list = []

    def do_POST(self):
        body = self._body()
        type(self).seen.append(body)
        prompt = body["messages"][0]["content"]
        asked = sum(b["messages"][0]["content"] == prompt for b in type(self).seen)
        content, finish = f"answer to {prompt}", "stop"
        if prompt.startswith("null") and (prompt == "null-always" or asked == 1):
            content = None
        if prompt.startswith("cut") and (prompt == "cut-always" or asked == 1):
            content, finish = f"half an answer to {prompt}", "length"
        self._reply(content, finish)


def test_a_reasoning_endpoint_gets_its_fields_and_incomplete_replies_are_retried_then_counted(tmp_path):
    from semievol_lf.io_utils import JsonlLog
    from semievol_lf.meteor.chat import cached_chat, chat_identity

    server = ThreadingHTTPServer(("127.0.0.1", 0), _ReasoningStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v1"
    try:
        plain = EndpointChat(ChatModelArguments(kind="openai", model="m", base_url=url, api_key_env=None))
        assert plain.payload(ChatRequest("q", seed=3, temperature=0.5, max_new_tokens=7)) == {
            "model": "m", "messages": [{"role": "user", "content": "q"}], "temperature": 0.5, "max_tokens": 7,
            "seed": 3}
        args = ChatModelArguments(kind="openai", model="o3-mini", base_url=url, api_key_env=None, reasoning=True,
                                  omit_fields=["seed"], backoff=0.01)
        assert args.omit_fields == ["seed", "temperature"] and chat_identity(args)["reasoning"] is True
        assert "reasoning" not in chat_identity(plain.args)  # older run folders keep their manifests
        chat = EndpointChat(args)
        prompts = ["fine", "null-once", "null-always", "cut-once", "cut-always"]
        keyed = [(p, ChatRequest(p, seed=i, temperature=0.7, max_new_tokens=5)) for i, p in enumerate(prompts)]
        log = JsonlLog(tmp_path / "teacher.jsonl")
        try:
            out = cached_chat(chat, keyed, log, "distill")
        finally:
            chat.close()
        for body in _ReasoningStub.seen:  # what an o1/o3-style model accepts, nothing it refuses
            assert set(body) == {"model", "messages", "max_completion_tokens"}, body
        asked = [(b["messages"][0]["content"], b["max_completion_tokens"]) for b in _ReasoningStub.seen]
        assert sorted(asked) == sorted([("fine", 5), ("null-once", 5), ("null-once", 5), ("null-always", 5),
                                        ("null-always", 5), ("cut-once", 5), ("cut-once", 10), ("cut-always", 5),
                                        ("cut-always", 10)])  # retried once; a cut reply with twice the limit
        assert out == {"fine": "answer to fine", "null-once": "answer to null-once", "null-always": "",
                       "cut-once": "answer to cut-once", "cut-always": "half an answer to cut-always"}
        rows = {r["key"]: r for r in log.load()}
        assert {k: r.get("problem") for k, r in rows.items()} == {
            "fine": None, "null-once": None, "null-always": "null", "cut-once": None, "cut-always": "length"}
        assert chat.incomplete == {"null": 1, "length": 1}
        # resumed from the cache: nothing asked again, the incomplete replies counted again
        again = EndpointChat(args)
        n = len(_ReasoningStub.seen)
        assert cached_chat(again, keyed, log, "distill") == out and len(_ReasoningStub.seen) == n
        assert again.incomplete == {"null": 1, "length": 1}
    finally:
        server.shutdown()
    with pytest.raises(ValueError, match="`reasoning`, `omit_fields` and `continue_final_message` are settings of an"):
        ChatModelArguments(kind="hf", preset="smollm2-135m", reasoning=True)


def test_the_report_shows_incomplete_replies():
    from semievol_lf.meteor.pipeline import note_incomplete
    from semievol_lf.meteor.report import _incomplete_section

    summary = {}
    note_incomplete(summary, type("C", (), {"name": "teacher", "incomplete": {"length": 2, "null": 1}})())
    note_incomplete(summary, type("C", (), {"name": "teacher", "incomplete": {"null": 1}})())
    note_incomplete(summary, type("C", (), {"name": "student"})())  # a local model: nothing to count
    assert summary == {"incomplete_replies": {"teacher": {"length": 2, "null": 2}}}
    assert "teacher 2 cut at the length limit, 2 null" in "".join(_incomplete_section(summary))
    assert not _incomplete_section({})


class _StubJudge(_JsonHandler):
    """A served judge (a hosted one cannot run here): it continues the reply's start it is sent
    (`continue_final_message`) and scores each answer shown by its text: "good" 9, "bad" 2, "fair" 5. Question
    "flaky": unreadable the first time; "broken": always prose; "hostile": a score of 11; "cut": cut JSON."""

    seen: list = []

    def do_POST(self):
        body = self._body()
        type(self).seen.append(body)
        prompt = body["messages"][0]["content"]
        question = prompt.split("\n", 1)[0].removeprefix("Question: ")
        asked = sum(b["messages"][0]["content"].startswith(f"Question: {question}\n") for b in type(self).seen)
        shown = re.findall(r"^Answer (\d+): (\w+)", prompt, re.MULTILINE)
        value = {"good": 9, "bad": 2, "fair": 5}
        entries = [{"answer": int(i), **dict.fromkeys(("accuracy", "completeness", "relevance", "coherence",
                                                        "reliability"), value[text]),
                    "justification": f"{text} answer"} for i, text in shown]
        if question == "hostile":
            entries[0]["accuracy"] = 11
        reply = "[\n  " + ",\n  ".join(json.dumps(e) for e in entries) + "\n]"  # as PREFILL starts it
        if question == "broken" or (question == "flaky" and asked == 1):
            reply = "All answers are great!"
        if question == "cut":
            reply = reply[:50]
        start = body["messages"][-1]["content"] if body.get("continue_final_message") else ""
        self._reply(reply[len(start):] if reply.startswith(start) else reply)


def test_the_judge_ranks_every_model_in_one_prompt_maps_shuffled_scores_back_and_retries_once(tmp_path):
    """judge_answers over a served judge: the scores return to the right model whatever the shuffled order, an
    unreadable judgment is asked again once reshuffled, and one still unreadable is counted, never scored."""
    from semievol_lf.meteor.judge import PREFILL, judge_answers
    from semievol_lf.meteor.questions import Question
    from semievol_lf.step import StepOutputs

    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = {"kind": "openai", "model": "judge", "base_url": f"http://127.0.0.1:{server.server_port}/v1",
                "api_key_env": None, "continue_final_message": True}
    try:
        cfg = build_config(MeteorArguments, {"teacher": endpoint})
        ids = ["fine", "again", "flaky", "broken", "hostile", "cut"]
        questions = [Question(f"q{i}", text) for i, text in enumerate(ids)]
        answers = {"base": dict.fromkeys([q.uid for q in questions], "bad"),
                   "distilled": dict.fromkeys([q.uid for q in questions], "fair"),
                   "self-evolved": dict.fromkeys([q.uid for q in questions], "good")}
        from semievol_lf.meteor.chat import EndpointChat

        chat = EndpointChat(cfg.judge_args, "judge")
        step = StepOutputs(tmp_path / "judge", {"x": 1}, "results.json", False)
        try:
            rows, out = judge_answers(cfg, questions, answers, chat, step, "judge", "judge")
        finally:
            chat.close()
    finally:
        server.shutdown()
    first = [b for b in _StubJudge.seen if b["messages"][-1]["role"] == "assistant"]
    assert len(first) == len(_StubJudge.seen) and all(b["messages"][-1]["content"] == PREFILL for b in first)
    assert all(b["continue_final_message"] is True and b["add_generation_prompt"] is False for b in first)
    by = {r["id"]: r for r in rows}
    assert len(_StubJudge.seen) == 6 + 4  # flaky, broken, hostile and cut asked again, once each
    for uid in ("q0", "q1", "q2"):
        assert by[uid]["scores"]["self-evolved"]["accuracy"] == 9.0 and by[uid]["scores"]["base"]["average"] == 2.0
        assert by[uid]["justifications"]["distilled"] == "fair answer"
    # prose after the reply's start is not JSON
    assert by["q2"]["judgments"][0] == PREFILL + "All answers are great!"
    assert len(by["q2"]["judgments"]) == 2 and by["q2"]["problems"] == ["not valid JSON (cut, or not JSON)", None]
    assert by["q2"]["order"] != by["q2"]["order"][:0] and sorted(by["q2"]["order"]) == sorted(answers)
    for uid in ("q3", "q4", "q5"):
        assert by[uid]["scores"] is None and len(by[uid]["judgments"]) == 2
    assert "`accuracy` is not a number from 1 to 10 (11)" in by["q4"]["problems"][-1]
    assert (out["questions"], out["readable"], out["retried"], out["unreadable"], out["justified"]) == (6, 3, 4, 3, 3)
    assert out["scores"]["self-evolved"]["accuracy"] == {"mean": 9.0, "interval": [9.0, 9.0]}
    assert out["win_rate"]["self-evolved"]["base"]["average"] == 1.0 and out["win_rate"]["base"]["distilled"][
        "reliability"] == 0.0
    # the shuffled orders differ between questions: a fixed position would not have mapped back right
    assert len({tuple(r["order"]) for r in rows}) > 1


def test_an_endpoint_request_carries_top_p_and_continues_the_prefill_only_when_asked():
    plain = EndpointChat(ChatModelArguments(kind="openai", model="m", api_key_env=None))
    request = ChatRequest("q", seed=3, temperature=0.7, max_new_tokens=7, top_p=0.9, prefill="VERDICT:")
    assert plain.payload(request) == {"model": "m", "messages": [{"role": "user", "content": "q"}],
                                      "temperature": 0.7, "max_tokens": 7, "seed": 3, "top_p": 0.9}
    vllm = EndpointChat(ChatModelArguments(kind="openai", model="m", api_key_env=None, continue_final_message=True,
                                           omit_fields=["top_p"]))
    assert vllm.payload(request) == {
        "model": "m", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "VERDICT:"}],
        "temperature": 0.7, "max_tokens": 7, "seed": 3, "continue_final_message": True,
        "add_generation_prompt": False}
    with pytest.raises(ValueError, match="`continue_final_message` are settings of an endpoint"):
        ChatModelArguments(kind="hf", preset="smollm2-135m", continue_final_message=True)


# ---------------------------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("keep", [True, False])
def test_a_teacher_that_never_accepts_stops_each_question_after_three_attempts(tmp_path, tiny_model, keep):
    """The random tiny model as student and teacher (real LlamaFactory SFT included): it never writes a clean
    `VERDICT: CORRECT`, so every question gets exactly 3 attempts (the authors' max_iterations 3); its last
    attempt is kept for training (the authors' default: an SFT round per `fine_tune_interval` items), or
    dropped (`keep_unaccepted=false`: no item, no round)."""
    out = tmp_path / "run"
    teacher = f"teacher={{kind: hf, model: '{tiny_model}', template: default, max_new_tokens: 12}}"
    run_cmd([CLI, "meteor", "run", ROOT / "recipes" / "meteor_demo.yaml", f"output_dir={out}", "student=tiny",
             f"student_model_name_or_path={tiny_model}", teacher, "n_questions=4", "max_new_tokens=12",
             "quality_questions=0", "fine_tune_interval=2", "stop_after=refine", f"keep_unaccepted={str(keep).lower()}",
             "train_overrides={}"], cwd=ROOT)  # METEOR's own settings: stage 1 three epochs, a round one
    trace = list(read_jsonl(out / "refine" / "trace.jsonl"))
    stats = read_json(out / "refine" / "stats.json")
    v = stats["verdicts"]
    assert v["correct"] == stats["accepted"] == 0 and v["incorrect"] + v["unreadable"] == 4 * 3
    assert all(t["judgment"].startswith("VERDICT:") for t in trace)  # the prefill
    for uid in {t["id"] for t in trace}:
        assert [t["iteration"] for t in trace if t["id"] == uid] == [0, 1, 2]
    assert len(_cache(out / "refine", "revise")) == 4 * 2
    items = read_json(out / "refine" / "items.json")
    if keep:
        last = {t["id"]: t["answer"] for t in trace if t["iteration"] == 2}
        assert {row["id"]: row["output"] for row in items} == last and not any(row["accepted"] for row in items)
        assert (stats["kept_unaccepted"], stats["dropped"], len(stats["rounds"])) == (4, 0, 2)
        assert read_json(out / "refine" / "round_2.json") == items[2:4]
        recipe = yaml.safe_load((out / "recipes" / "refine_round_2.yaml").read_text())
        assert recipe["num_train_epochs"] == 1 and recipe["adapter_name_or_path"] == str(out / "refine" / "round_1")
        assert yaml.safe_load((out / "recipes" / "sft.yaml").read_text())["num_train_epochs"] == 3
        assert stats["adapter"] == str(out / "refine" / "round_2")
    else:
        assert items == [] and (stats["kept_unaccepted"], stats["dropped"], stats["rounds"]) == (0, 4, [])
        assert not list((out / "refine").glob("round_*")) and stats["adapter"] == str(out / "sft")


FAULT = "refine/cache/judge:2"  # killed (SIGKILL) right after the second chunk of the teacher's verdicts
SMALLER = ["n_questions=4", "n_test=2"]  # fewer questions: one refinement round (interval 3) and one question after it


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """recipes/meteor_demo.yaml for real: killed once mid-refinement, resumed to the end, then run again."""
    out = tmp_path_factory.mktemp("meteor") / "run"
    cmd = [CLI, "meteor", "run", ROOT / "recipes" / "meteor_demo.yaml", f"output_dir={out}", *SMALLER]
    killed = run_cmd(cmd, cwd=ROOT, check=False, env={**os.environ, "SEMIEVOL_FAULT": FAULT})
    assert killed.returncode == -9 and f"fault injected: SEMIEVOL_FAULT={FAULT}:sigkill" in killed.stderr, \
        killed.stderr[-2000:]
    before = [row["key"] for row in read_jsonl(out / "refine" / "cache" / "judge.jsonl")]
    start = time.monotonic()
    resumed = run_cmd(cmd, cwd=ROOT)
    wall = time.monotonic() - start
    again = run_cmd(cmd, cwd=ROOT)
    cfg = yaml.safe_load((ROOT / "recipes" / "meteor_demo.yaml").read_text())
    for override in SMALLER:
        cfg.update(yaml.safe_load(override.replace("=", ": ", 1)))
    return {"dir": out, "before": before, "resumed": resumed, "again": again, "wall": wall, "cfg": cfg}


def _cache(folder: Path, stage: str) -> dict:
    rows = list(read_jsonl(folder / "cache" / f"{stage}.jsonl"))
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), f"{stage}: a request was computed twice"
    return {r["key"]: r["text"] for r in rows}


@pytest.mark.slow
def test_resume_after_a_kill_reuses_every_finished_request(demo_run):
    d = demo_run["dir"]
    judged = list(_cache(d / "refine", "judge"))
    assert len(demo_run["before"]) >= 2 and judged[:len(demo_run["before"])] == demo_run["before"]
    out = demo_run["resumed"].stdout + demo_run["resumed"].stderr
    assert "guidelines: finished before, skipped" in out and "distill: finished before, skipped" in out
    assert "sft: finished before, skipped" in out
    again = demo_run["again"].stdout + demo_run["again"].stderr
    for step in ("guidelines", "distill", "quality", "refine", "preferences", "judge", "sft", "dpo"):
        assert f"{step}: finished before, skipped" in again
    assert "computed" not in again  # nothing recomputed
    print(f"resumed run: {demo_run['wall']:.0f} s")


@pytest.mark.slow
def test_every_sft_row_comes_from_a_teacher_answer(demo_run):
    from semievol_lf.meteor.distill import distill_prompt

    d = demo_run["dir"]
    teacher = _cache(d / "distill", "teacher")
    guidelines = {r["id"]: r["guideline"] for r in read_jsonl(d / "guidelines" / "guidelines.jsonl")}
    domain = read_json(d / "questions.json")["domain"]
    rows = read_json(d / "distill" / "sft.json")
    assert len(rows) == read_json(d / "distill" / "stats.json")["rows"] > 0
    assert set(guidelines) == {q["uid"] for q in domain} == set(teacher)
    for row in rows:
        assert row["output"] == teacher[row["id"]] and row["instruction"] == next(
            q["question"] for q in domain if q["uid"] == row["id"])
    assert distill_prompt("Q?", "G.").endswith("Question: Q?\n\nGuideline: G.")
    sft = yaml.safe_load((d / "recipes" / "sft.yaml").read_text())
    assert (sft["stage"], sft["dataset"]) == ("sft", "meteor_distilled") and "adapter_name_or_path" not in sft
    assert (d / "sft" / "adapter_config.json").is_file() and (d / "sft" / "semievol_step.json").is_file()


@pytest.mark.slow
def test_the_guideline_ablation_judges_both_teacher_answer_sets(demo_run):
    """quality/: the teacher's answers without the guideline (one per question of the first
    `quality_questions`), the with-guideline ones reused from distill/, both judged in one prompt per question;
    the report's table recounts from scores.jsonl."""
    from semievol_lf.meteor.judge import judge_prompt
    from semievol_lf.meteor.quality import PLAIN_PROMPT, WITH, WITHOUT

    d, n = demo_run["dir"], demo_run["cfg"]["quality_questions"]
    domain = read_json(d / "questions.json")["domain"][:n]
    plain, teacher = _cache(d / "quality", "plain"), _cache(d / "distill", "teacher")
    judged = _cache(d / "quality", "judge")
    assert list(plain) == [q["uid"] for q in domain] and all(plain.values())
    rows = list(read_jsonl(d / "quality" / "scores.jsonl"))
    assert len(rows) == n and {f"{r['id']}|a0" for r in rows} <= set(judged)
    for row, q in zip(rows, domain):
        assert row["answers"] == {WITH: teacher[q["uid"]], WITHOUT: plain[q["uid"]]}
        assert row["judgments"][-1] == judged[f"{q['uid']}|a{len(row['judgments']) - 1}"]
        shown = judge_prompt(q["question"], [row["answers"][m] for m in row["order"]])
        assert shown.count("\nAnswer ") == 2 and all(a in shown for a in row["answers"].values())
    results = read_json(d / "quality" / "results.json")
    assert results == json.loads(json.dumps(summarize(rows, [WITH, WITHOUT], demo_run["cfg"]["seed"])))
    assert read_json(d / "summary.json")["quality"] == results
    report = (d / "report.md").read_text()
    assert "## Data quality: teacher answers with vs without guidelines" in report
    assert f"| {WITH} |" in report and f"| {WITHOUT} |" in report and "{question}" in PLAIN_PROMPT
    print("quality:", results["readable"], "readable of", results["questions"])


@pytest.mark.slow
def test_refinement_stops_after_three_attempts_and_trains_at_each_interval(demo_run):
    d, cfg = demo_run["dir"], demo_run["cfg"]
    attempts_at_most, interval = cfg["max_revisions"] + 1, cfg["fine_tune_interval"]
    trace = list(read_jsonl(d / "refine" / "trace.jsonl"))
    stats = read_json(d / "refine" / "stats.json")
    items = read_json(d / "refine" / "items.json")
    by_question: dict[str, list] = {}
    for t in trace:
        by_question.setdefault(t["id"], []).append(t)
    assert len(by_question) == stats["questions"] and attempts_at_most == stats["attempts"] == 3
    for attempts in by_question.values():
        assert [a["iteration"] for a in attempts] == list(range(len(attempts))) and len(attempts) <= attempts_at_most
        assert all(a["verdict"] != "correct" for a in attempts[:-1])  # revised only after feedback
        assert all(a["verdict"] == parse_verdict(a["judgment"]) for a in attempts)
        if attempts[-1]["verdict"] != "correct":
            assert len(attempts) == attempts_at_most  # given up only after the third attempt
    counted = {v: sum(t["verdict"] == v for t in trace) for v in ("correct", "incorrect", "unreadable")}
    assert stats["verdicts"] == counted and counted["correct"] == stats["accepted"]
    # every question gives one training item (keep_unaccepted: the last attempt of a never-accepted one)
    assert len(items) == stats["questions"] == stats["accepted"] + stats["kept_unaccepted"] and not stats["dropped"]
    for row in items:
        last = by_question[row["id"]][-1]
        assert last["answer"] == row["output"] and row["accepted"] == (last["verdict"] == "correct")
    # one SFT round of one epoch per `fine_tune_interval` items, on exactly those items
    rounds = stats["rounds"]
    assert len(rounds) == len(items) // interval >= 1
    for r in rounds:
        k = r["round"]
        data = read_json(d / "refine" / f"round_{k}.json")
        assert data == items[(k - 1) * interval:k * interval]
        recipe = yaml.safe_load((d / "recipes" / f"refine_round_{k}.yaml").read_text())
        previous = str(d / "sft") if k == 1 else rounds[k - 2]["adapter"]
        assert recipe["dataset"] == f"meteor_refine_{k}" and recipe["adapter_name_or_path"] == previous
        assert recipe["num_train_epochs"] == 1
        assert (Path(r["adapter"]) / "semievol_step.json").is_file()
        # every question after the round was answered by the newly trained student
        later = [t for t in trace if t["iteration"] == 0 and
                 [q["uid"] for q in read_json(d / "questions.json")["domain"]].index(t["id"]) >= r["after_questions"]]
        assert all(t["student_round"] >= k for t in later)
    assert stats["adapter"] == (rounds[-1]["adapter"])


@pytest.mark.slow
def test_every_preference_pair_is_the_best_against_the_worst_answer(demo_run):
    """The demo ranks by likelihood: every answer (the greedy one and the sample) scored by the student; the
    pair is the best against the worst. Stage 3 trains SimPO (no reference model)."""
    d, cfg = demo_run["dir"], demo_run["cfg"]
    assert cfg["preference_rule"] == "likelihood"
    candidates = {c["id"]: c for c in read_jsonl(d / "preferences" / "candidates.jsonl")}
    pairs = read_json(d / "preferences" / "pairs.json")
    stats = read_json(d / "preferences" / "stats.json")
    assert pairs and len(pairs) == stats["pairs"] == stats["questions"] - stats["same_answer"] - stats["tie"] - \
        stats["empty"]
    greedy, sampled = _cache(d / "preferences", "greedy"), _cache(d / "preferences", "sample")
    scores = {r["key"]: r["score"] for r in read_jsonl(d / "preferences" / "cache" / "score.jsonl")}
    for pair in pairs:
        uid = pair["id"]
        answers = [greedy[uid], *[sampled[f"{uid}|s{j}"] for j in range(cfg["num_samples"])]]
        assert candidates[uid]["answers"] == answers
        own = {a: scores[f"{uid}|c{i}"] for i, a in enumerate(answers) if a}  # the scores as cached
        assert own[pair["chosen"]] == max(own.values()) > own[pair["rejected"]] == min(own.values())
    info = read_json(d / "preferences" / "dataset_info.json")["meteor_preferences"]
    assert info["ranking"] is True and info["columns"]["chosen"] == "chosen"
    recipe = yaml.safe_load((d / "recipes" / "dpo.yaml").read_text())
    refined = read_json(d / "refine" / "stats.json")["adapter"]
    assert (recipe["stage"], recipe["pref_loss"], recipe["simpo_gamma"]) == ("dpo", "simpo", 0.0)
    assert recipe["adapter_name_or_path"] == refined and "ref_model" not in recipe
    assert (d / "dpo" / "adapter_config.json").is_file() and (d / "dpo" / "semievol_step.json").is_file()
    assert "'loss'" in (d / "logs" / "dpo.log").read_text() or "train_loss" in (d / "logs" / "dpo.log").read_text()


@pytest.mark.slow
def test_the_judge_ranks_every_stage_and_its_table_recounts_from_its_judgments(demo_run):
    from semievol_lf.meteor.judge import parse_judgment

    d, cfg = demo_run["dir"], demo_run["cfg"]
    models = ["base", "distilled", "refined", "self-evolved"]
    rows = list(read_jsonl(d / "judge" / "scores.jsonl"))
    results = read_json(d / "judge" / "results.json")
    assert results["models"] == models and len(rows) == cfg["n_test"]
    assert results == json.loads(json.dumps(summarize(rows, models, cfg["seed"])))
    for row in rows:  # the scores are the last judgment's, read back through the order it showed
        assert sorted(row["order"]) == sorted(models) and len(row["judgments"]) == 1 + (row["problems"][0] is not None)
        scores, why = parse_judgment(row["judgments"][-1], len(models))
        assert why == row["problems"][-1]
        if scores:
            assert {m: row["scores"][m]["average"] for m in models} == {
                m: scores[row["order"].index(m)]["average"] for m in models}
        else:
            assert row["scores"] is None
    assert results["readable"] == sum(r["scores"] is not None for r in rows)
    assert results["readable"] + results["unreadable"] == len(rows)
    report = (d / "report.md").read_text()
    assert f"Readable judgments: {results['readable']} of {len(rows)} questions" in report
    assert "| Model | Accuracy | Completeness | Relevance | Coherence | Reliability | Average (of the five) |" in report
    assert all(f"| {m} |" in report for m in models) and (d / "plots" / "judge_scores.png").is_file()
    if results["readable"]:
        assert re.search(r"\| base \| \d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\] \|", report)  # a mean and its interval
        assert "Pairwise win rates on the average score" in report
    summary = read_json(d / "summary.json")
    assert summary["judge"] == results and summary["refine"]["rounds"]
    assert set(summary["adapters"]) == {"sft", "refine", "dpo"}
    print("judge:", results["readable"], "readable of", len(rows), {m: results["scores"][m]["average"] for m in models})
