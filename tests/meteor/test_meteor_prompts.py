"""METEOR's prompts (templates/meteor/*.jinja) render byte for byte as the Python string constants they
replaced: the expected strings below were recorded from those constants' `.format(...)` before the move.
A question, answer, guideline or feedback is pasted as is: braces and Jinja-like `{{ }}`, `{% %}`, `{# #}`
stay literal, and the whitespace around it (leading, trailing, \\r\\n, tabs) is kept, never stripped.
The verdict and judge prompts were changed since (issue 22: a machine-readable `VERDICT:` first line; every answer
to a question judged in one prompt, a JSON list out), so the manifests of their steps changed with them; their
expected texts below are the new ones."""

import re

from conftest import ROOT

from semievol_lf.meteor import distill, guidelines, judge, quality, refine

Q = 'What does {x} mean in f"{x!r}", and {{ y }} or {% raw %}{# c #} in Jinja? {question} {0}'
A = "  Use {{ '{' }} and }} {answer} {feedback}\r\nline two\t \n"
G = "\n- point {guideline}\n- {{ loop.index }} {%- if x %}\n\n"
F = "Incorrect. {feedback} is {{ wrong }} }{"

# what the prompts of this commit's parent render for Q, A, G, F (recorded, not recomputed)
EXPECTED = {
    "guideline": 'Write a short guideline for answering the question below: list the key points a good answer must cover. Do not answer the question itself.\n\nQuestion: What does {x} mean in f"{x!r}", and {{ y }} or {% raw %}{# c #} in Jinja? {question} {0}',  # noqa: E501
    "guideline_empty": "Write a short guideline for answering the question below: list the key points a good answer must cover. Do not answer the question itself.\n\nQuestion: ",  # noqa: E501
    "distill": 'Answer the question below. Follow the guideline: cover every point it names, clearly and correctly.\n\nQuestion: What does {x} mean in f"{x!r}", and {{ y }} or {% raw %}{# c #} in Jinja? {question} {0}\n\nGuideline: \n- point {guideline}\n- {{ loop.index }} {%- if x %}\n\n',  # noqa: E501
    "answer": 'Answer the question below. First explain your reasoning step by step, then state your answer.\n\nQuestion: What does {x} mean in f"{x!r}", and {{ y }} or {% raw %}{# c #} in Jinja? {question} {0}',  # noqa: E501
    "verdict": 'Question: What does {x} mean in f"{x!r}", and {{ y }} or {% raw %}{# c #} in Jinja? {question} {0}\n\nStudent\'s answer:   Use {{ \'{\' }} and }} {answer} {feedback}\r\nline two\t \n\n\nIs this answer correct? Reply with your verdict on the first line, exactly "VERDICT: CORRECT" or "VERDICT: INCORRECT", and nothing else on that line. If the answer is correct, write nothing more. If it is incorrect, add feedback on what is wrong or missing, and hints to improve it, after that line.',  # noqa: E501
    "revise": 'Question: What does {x} mean in f"{x!r}", and {{ y }} or {% raw %}{# c #} in Jinja? {question} {0}\n\nYour previous answer:   Use {{ \'{\' }} and }} {answer} {feedback}\r\nline two\t \n\n\nA teacher\'s feedback: Incorrect. {feedback} is {{ wrong }} }{\n\nWrite an improved answer: explain your reasoning step by step, then state your answer.',  # noqa: E501
    "judge": 'Question: What does {x} mean in f"{x!r}", and {{ y }} or {% raw %}{# c #} in Jinja? {question} {0}\n\nAnswer 1:   Use {{ \'{\' }} and }} {answer} {feedback}\r\nline two\t \n\n\nAnswer 2: second\n\nScore each answer from 1 (poor) to 10 (excellent) on accuracy, completeness, relevance, coherence and reliability, and justify the scores of each answer in one short sentence (a "justification" key). Reply with a JSON list only, one object per answer, in this form:\n[\n  {"answer": 1, "accuracy": S, "completeness": S, "relevance": S, "coherence": S, "reliability": S},\n  {"answer": 2, "accuracy": S, "completeness": S, "relevance": S, "coherence": S, "reliability": S}\n]\nwhere each S is a score from 1 to 10.',  # noqa: E501
    "plain": 'Answer the question below clearly and correctly.\n\nQuestion: What does {x} mean in f"{x!r}", and {{ y }} or {% raw %}{# c #} in Jinja? {question} {0}',  # noqa: E501
    "plain_ws": "Answer the question below clearly and correctly.\n\nQuestion: Why ü?\n ",
}

# the constants as they were (`{field}` where a value goes): the steps' manifests fingerprint these, so a run
# folder made before the move still resumes
SHAPES = {
    (guidelines, "GUIDELINE_PROMPT"): "Write a short guideline for answering the question below: list the key points a good answer must cover. Do not answer the question itself.\n\nQuestion: {question}",  # noqa: E501
    (distill, "DISTILL_PROMPT"): "Answer the question below. Follow the guideline: cover every point it names, clearly and correctly.\n\nQuestion: {question}\n\nGuideline: {guideline}",  # noqa: E501
    (refine, "ANSWER_PROMPT"): "Answer the question below. First explain your reasoning step by step, then state your answer.\n\nQuestion: {question}",  # noqa: E501
    (refine, "JUDGE_PROMPT"): 'Question: {question}\n\nStudent\'s answer: {answer}\n\nIs this answer correct? Reply with your verdict on the first line, exactly "VERDICT: CORRECT" or "VERDICT: INCORRECT", and nothing else on that line. If the answer is correct, write nothing more. If it is incorrect, add feedback on what is wrong or missing, and hints to improve it, after that line.',  # noqa: E501
    (refine, "REVISE_PROMPT"): "Question: {question}\n\nYour previous answer: {answer}\n\nA teacher's feedback: {feedback}\n\nWrite an improved answer: explain your reasoning step by step, then state your answer.",  # noqa: E501
    (judge, "JUDGE_PROMPT"): 'Question: {question}\n\nAnswer 1: {answer_1}\n\nAnswer 2: {answer_2}\n\nScore each answer from 1 (poor) to 10 (excellent) on accuracy, completeness, relevance, coherence and reliability, and justify the scores of each answer in one short sentence (a "justification" key). Reply with a JSON list only, one object per answer, in this form:\n[\n  {"answer": 1, "accuracy": S, "completeness": S, "relevance": S, "coherence": S, "reliability": S},\n  {"answer": 2, "accuracy": S, "completeness": S, "relevance": S, "coherence": S, "reliability": S}\n]\nwhere each S is a score from 1 to 10.',  # noqa: E501
    (quality, "PLAIN_PROMPT"): "Answer the question below clearly and correctly.\n\nQuestion: {question}",
}


def test_each_prompt_renders_as_before_with_braces_and_whitespace_kept():
    rendered = {
        "guideline": guidelines.guideline_prompt(Q),
        "guideline_empty": guidelines.guideline_prompt(""),
        "distill": distill.distill_prompt(Q, G),
        "answer": refine.answer_prompt(Q),
        "verdict": refine.verdict_prompt(Q, A),
        "revise": refine.revise_prompt(Q, A, F),
        "judge": judge.judge_prompt(Q, [A, "second"]),
        "plain": quality.plain_prompt(Q),
        "plain_ws": quality.plain_prompt("Why ü?\n "),
    }
    for name, text in rendered.items():
        assert text == EXPECTED[name], name


def test_the_manifests_fingerprint_the_same_prompt_text_as_before():
    for (module, name), shape in SHAPES.items():
        assert getattr(module, name) == shape, f"{module.__name__}.{name}"
    assert judge.PREFILL == '[\n  {"answer": 1, "accuracy": ' and refine.PREFILL == "VERDICT:"


def test_the_prompt_text_lives_in_templates_meteor_only():
    """Every template is used, and no module of semievol_lf/meteor/ spells a prompt's text itself."""
    names = {p.stem for p in (ROOT / "templates" / "meteor").glob("*.jinja")}
    assert names == {"guideline", "distill", "answer", "verdict", "revise", "judge", "plain"}
    for path in (ROOT / "semievol_lf" / "meteor").glob("*.py"):
        source = path.read_text()
        for phrase in ("Question: {question}", "Answer the question below", "Score each answer",
                       "Write an improved answer", "Is this answer correct?"):
            assert phrase not in source, f"{path.name}: {phrase!r}"
    used = set(re.findall(r"meteor_prompt\(\s*\"(\w+)\"", "".join(
        p.read_text() for p in (ROOT / "semievol_lf" / "meteor").glob("*.py"))))
    assert used == names
