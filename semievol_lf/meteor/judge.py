"""Stage 4: an LLM judge scores the student with and without METEOR on METEOR's five criteria
(accuracy, completeness, relevance, coherence, reliability) and an overall score, each 1-10.

    results = judge(cfg, layout, test_questions, {"w/o METEOR": base_student, "w/ METEOR": meteor_student}, judge)

Both students answer the held-out test questions greedily; the judge scores each answer on its own
(absolute scores, so the order two answers are shown in cannot bias it), and the win rate per
criterion compares the two models question by question (ties count half), as METEOR's main table.

The judge writes the six scores in a fixed format (templates/meteor/judge.jinja); a local judge's reply is started
with "Accuracy:" (a 135M judge needs it to keep the format; an endpoint is asked by the prompt alone).
A judgment whose six scores cannot all be read is counted as invalid and left out of the means.
Not handled: several judges, or position-swapped pairwise judging.
"""

import re

from ..io_utils import atomic_write_json, atomic_write_jsonl, fingerprint, read_json
from ..progress import banner
from ..step import StepOutputs
from .chat import ChatRequest, cached_chat, chat_identity, request_seed
from .prompts import meteor_prompt, prompt_shape

CRITERIA = ("accuracy", "completeness", "relevance", "coherence", "reliability")
SCORES = (*CRITERIA, "overall")
JUDGE_PROMPT = prompt_shape("judge", "question", "answer")  # templates/meteor/judge.jinja, for the manifests
PREFILL = "Accuracy:"  # a local judge's reply starts here (an endpoint's is asked for by the prompt alone)


def judge_prompt(question: str, answer: str) -> str:
    return meteor_prompt("judge", question=question, answer=answer)


def _score_re(name: str) -> re.Pattern:
    # the name, up to 4 separators (":", "**", "|", "=", " - "), a number not signed and not a range, an optional "/10"
    return re.compile(rf"\b{name}\b[\s:*=|\-]{{0,4}}(?<![-\d.])(\d+(?:\.\d+)?)(?:\s*/\s*10\b)?(?!\d|\.\d|\s*[-/]\s*\d)",
                      re.IGNORECASE)


_SCORE_RES = {name: _score_re(name) for name in SCORES}


def parse_scores(text: str) -> dict[str, float] | None:
    """The six scores of a judgment, or None (an invalid judgment, counted by `summarize`, never a score) unless
    each is there once (or repeated with the same value), a plain number within 1-10.

    "Accuracy: 8\nCompleteness: 7/10 ... Overall: 8" -> {"accuracy": 8.0, "completeness": 7.0, ..., "overall": 8.0};
    "Great!" -> None;  "Accuracy: N ..." -> None;  "Accuracy: 8-9 ..." -> None;  "Accuracy: 3/5 ..." -> None;
    "Accuracy: 0 ..." -> None;  "Accuracy: 8 ... Accuracy: 3 ..." -> None
    """
    out = {}
    for name in SCORES:
        values = {float(v) for v in _SCORE_RES[name].findall(text)}
        if len(values) != 1 or not 1 <= min(values) <= 10:
            return None
        out[name] = values.pop()
    return out


def summarize(rows: list[dict], models: list[str]) -> dict:
    """Per model: valid judgments and the mean of each score; per criterion: the win rate of each model
    over the questions both were validly scored on (a tie counts half to each)."""
    by = {(r["model"], r["id"]): r["scores"] for r in rows}
    ids = sorted({r["id"] for r in rows})
    table = {}
    for model in models:
        valid = [by[model, i] for i in ids if by.get((model, i))]
        table[model] = {"n": sum((model, i) in by for i in ids), "valid": len(valid),
                        **{s: (sum(v[s] for v in valid) / len(valid) if valid else None) for s in SCORES}}
    wins = {}
    if len(models) == 2:
        a, b = models
        both = [i for i in ids if by.get((a, i)) and by.get((b, i))]
        for s in SCORES:
            won = sum(1.0 if by[a, i][s] > by[b, i][s] else 0.5 if by[a, i][s] == by[b, i][s] else 0.0 for i in both)
            wins[s] = {a: won / len(both), b: 1 - won / len(both)} if both else None
        wins["compared"] = len(both)
    return {"models": models, "scores": table, "win_rate": wins}


def score_answers(cfg, questions: list, answers: dict[str, dict[str, str]], judge_chat, cache, label: str,
                  salt: str) -> tuple[list[dict], dict]:
    """Judge every answer set of `answers` (name -> question uid -> answer) on its own; return the rows of
    scores.jsonl and their `summarize`. `salt` keeps each step's sampling seeds its own."""
    j = cfg.judge_args
    keyed = [(f"{name}|{q.uid}", ChatRequest(judge_prompt(q.question, answers[name][q.uid]),
                                             request_seed(cfg.seed, name, q.uid, salt), j.temperature,
                                             j.max_new_tokens, prefill=PREFILL))
             for name in answers for q in questions]
    judged = cached_chat(judge_chat, keyed, cache, label)
    rows = [{"id": q.uid, "model": name, "question": q.question, "answer": answers[name][q.uid],
             "judgment": judged[f"{name}|{q.uid}"], "scores": parse_scores(judged[f"{name}|{q.uid}"])}
            for name in answers for q in questions]
    return rows, summarize(rows, list(answers))


def judge(cfg, layout, questions: list, students: dict, judge_chat) -> dict:
    folder = layout.judge
    j = cfg.judge_args
    from .refine import ANSWER_PROMPT, answer_prompt

    manifest = {"settings": fingerprint({**cfg.settings("seed", "max_new_tokens"), "judge_tokens": j.max_new_tokens,
                                         "prompts": [ANSWER_PROMPT, JUDGE_PROMPT, PREFILL],
                                         "judge_temperature": j.temperature}),
                "questions": fingerprint([q.to_dict() for q in questions]), "judge": chat_identity(j),
                "students": {name: s.identity for name, s in students.items()}}
    step = StepOutputs(folder, manifest, "results.json", cfg.overwrite_output_dir)
    if step.finished():
        print(f"judge: finished before, skipped ({folder})")
        return read_json(folder / "results.json")
    banner(f"METEOR stage 4: the judge scores {', '.join(students)} on {len(questions)} test questions")
    answers = {}
    for i, (name, student) in enumerate(students.items()):
        keyed = [(q.uid, ChatRequest(answer_prompt(q.question), request_seed(cfg.seed, q.uid, "test"),
                                     max_new_tokens=cfg.max_new_tokens)) for q in questions]
        try:
            answers[name] = cached_chat(student, keyed, step.cache(f"answer_{i}"), f"answer ({name})")
        finally:
            student.close()
    rows, results = score_answers(cfg, questions, answers, judge_chat, step.cache("judge"), "judge", "judge")
    atomic_write_jsonl(folder / "scores.jsonl", rows)
    atomic_write_json(folder / "results.json", results)  # last
    return results
