"""Stage 4: an LLM judge ranks the student of every stage (the base model, after distillation, after
refinement, after self-evolution) on the held-out test questions, as the authors' evaluate.py: all the
answers to one question in one prompt, each scored 1-10 on accuracy, completeness, relevance, coherence
and reliability with a short justification, as a JSON list.

    results = judge(cfg, layout, test_questions, {"base": s0, "distilled": s1, ...}, judge_chat)

The answers are shown in an order shuffled per question (seeded by `seed`), so no model always comes
first. A judgment that `parse_judgment` cannot read is asked again once with the answers reshuffled;
one still unreadable is counted and shown in the report (with why), never read as a score. `summarize`
gives per model the mean of each criterion and of their average with a bootstrap 95% interval over the
questions, and per pair of models the win rate (ties count half) on the readably judged questions.
quality.py judges the teacher's answers with and without guidelines the same way.

A local judge's reply is started with `PREFILL` (a 135M judge then keeps the JSON form); an endpoint is
asked by the prompt alone, or continues PREFILL with `continue_final_message` (vLLM). Not handled:
several judges; a score given as a string ("8", "8/10"), which is unreadable.
"""

import json
import math
import random
import re
from collections import Counter

from ..io_utils import atomic_write_json, atomic_write_jsonl, fingerprint, read_json
from ..progress import banner
from ..step import StepOutputs
from .chat import ChatRequest, cached_chat, chat_identity, request_seed
from .prompts import meteor_prompt

CRITERIA = ("accuracy", "completeness", "relevance", "coherence", "reliability")
AVERAGE = "average"  # the mean of the five criteria of one answer
SCORES = (*CRITERIA, AVERAGE)
PREFILL = '[\n  {"answer": 1, "accuracy": '  # a local judge's reply starts here
BOOTSTRAP = 1000  # resamples of the questions for each interval
# templates/meteor/judge.jinja with two answers shown as `{answer_1}`, `{answer_2}`, as the manifests record it
JUDGE_PROMPT = meteor_prompt("judge", question="{question}", answers=["{answer_1}", "{answer_2}"])
_THINK = re.compile(r"^\s*(?:<think>)?.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL | re.IGNORECASE)
_TRAILING_COMMA = re.compile(r",(\s*[\]}])")  # `[{...},\n]`: a common slip of small judges, it changes no score


def judge_prompt(question: str, answers: list[str]) -> str:
    return meteor_prompt("judge", question=question, answers=answers)


class _Conflict(ValueError):
    pass


def _no_repeats(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys (case ignored) each appear once, or twice with one value."""
    out = {}
    for key, value in pairs:
        key = key.lower() if isinstance(key, str) else key
        if key in out and out[key] != value:
            raise _Conflict(f"{key!r} given twice")
        out[key] = value
    return out


def _reject_constant(name: str):
    raise _Conflict(f"{name} is not a score")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_repeats, parse_constant=_reject_constant)


def _is_score(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 1 <= value <= 10)


def _decode(body: str) -> tuple[object, str]:
    """The JSON value `body` starts with and the text after it; failing that, the same with trailing commas
    (`,]`, `,}`) removed."""
    try:
        value, end = _DECODER.raw_decode(body)
    except _Conflict:
        raise
    except ValueError:
        body = _TRAILING_COMMA.sub(r"\1", body)
        value, end = _DECODER.raw_decode(body)
    return value, body[end:]


def parse_judgment(text: str, n: int) -> tuple[list[dict] | None, str | None]:
    """The scores of the n answers shown (list index i: "Answer i+1"), or (None, why) for an unreadable judgment.

    The reply must hold one JSON list (a leading <think> block and a ```json fence are allowed, text around it
    too; a trailing comma is forgiven) of n objects, each with a distinct "answer" 1..n and the five criteria as
    numbers within 1-10;
    "justification" is kept when it is a string. Keys are read case-insensitively; other keys are ignored.

    '[{"answer": 1, "accuracy": 8, ..., "reliability": 6, "justification": "ok"}]', 1
        -> ([{"accuracy": 8.0, ..., "reliability": 6.0, "average": 7.4, "justification": "ok"}], None)
    'Great!', 1 -> (None, "no JSON list");  '[{"answer": 1, "accuracy": "8", ...}]', 1 -> (None, "answer 1: ...")
    """
    body = _THINK.sub("", text, count=1)
    fence = _FENCE.search(body)
    body = fence.group(1) if fence else body
    start = body.find("[")
    if start < 0:
        return None, "no JSON list"
    try:
        value, rest = _decode(body[start:])
    except _Conflict as err:
        return None, str(err)
    except ValueError:
        return None, "not valid JSON (cut, or not JSON)"
    for i in [m.start() for m in re.finditer(r"\[", rest)]:
        try:
            other = _DECODER.raw_decode(rest, i)[0]
            if isinstance(other, list) and any(isinstance(x, dict) for x in other):
                return None, "two JSON lists"
        except ValueError:
            continue
    if not isinstance(value, list) or len(value) != n:
        return None, f"expected a list of {n} objects, got {len(value) if isinstance(value, list) else 'no list'}"
    out: list[dict | None] = [None] * n
    for entry in value:
        if not isinstance(entry, dict):
            return None, "an entry is not an object"
        a = entry.get("answer")
        if isinstance(a, bool) or not isinstance(a, int) or not 1 <= a <= n or out[a - 1] is not None:
            return None, f"`answer` must be a distinct number 1-{n}, got {a!r}"
        scores = {}
        for c in CRITERIA:
            if not _is_score(entry.get(c)):
                return None, f"answer {a}: `{c}` is not a number from 1 to 10 ({entry.get(c)!r})"
            scores[c] = float(entry[c])
        scores[AVERAGE] = sum(scores[c] for c in CRITERIA) / len(CRITERIA)
        why = entry.get("justification")
        scores["justification"] = why if isinstance(why, str) else ""
        out[a - 1] = scores
    return out, None


def shuffled(names: list[str], seed: int, *parts) -> list[str]:
    """`names` in an order drawn from (seed, parts): the same on every run, different per question."""
    order = list(names)
    random.Random(request_seed(seed, *parts)).shuffle(order)
    return order


def bootstrap_interval(values: list[float], seed: int, resamples: int = BOOTSTRAP) -> list[float] | None:
    """The 95% percentile interval of the mean of `values`, resampling them with replacement `resamples` times.

    [5.0, 5.0, 5.0] -> [5.0, 5.0];  [] -> None
    """
    if not values:
        return None
    import numpy as np

    data = np.asarray(values, dtype=float)
    means = data[np.random.default_rng(seed).integers(0, len(data), (resamples, len(data)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def summarize(rows: list[dict], models: list[str], seed: int = 0) -> dict:
    """rows (one per question: "scores" model -> criterion -> score, or None when unreadable) -> per model the mean
    and 95% interval of each criterion and of the average; per pair (a, b) the share of the readably judged
    questions on which a scored higher than b (ties half), per criterion; the readable/retried/unreadable counts."""
    valid = [r["scores"] for r in rows if r["scores"]]
    scores = {}
    for m in models:
        scores[m] = {}
        for s in SCORES:
            values = [v[m][s] for v in valid]
            scores[m][s] = {"mean": sum(values) / len(values) if values else None,
                            "interval": bootstrap_interval(values, request_seed(seed, m, s))}
    wins = {a: {b: {s: (sum(1.0 if v[a][s] > v[b][s] else 0.5 if v[a][s] == v[b][s] else 0.0 for v in valid)
                        / len(valid) if valid else None) for s in SCORES} for b in models if b != a} for a in models}
    problems = Counter(r["problems"][-1] for r in rows if not r["scores"])
    justified = sum(bool(r["scores"] and r.get("justifications") and all(r["justifications"].values())) for r in rows)
    return {"models": models, "questions": len(rows), "readable": len(valid), "justified": justified,
            "retried": sum(len(r["judgments"]) > 1 for r in rows), "unreadable": sum(problems.values()),
            "unreadable_why": dict(problems), "scores": scores, "win_rate": wins}


def judge_answers(cfg, questions: list, answers: dict[str, dict[str, str]], judge_chat, step, label: str,
                  salt: str) -> tuple[list[dict], dict]:
    """Judge the answer sets of `answers` (name -> question uid -> answer) together, one prompt per question;
    return the rows of scores.jsonl and their `summarize`. An unreadable judgment is asked again once with the
    answers reshuffled. `salt` keeps each step's orders and seeds its own."""
    j, names = cfg.judge_args, list(answers)

    def request(q, attempt: int) -> ChatRequest:
        order = shuffled(names, cfg.seed, q.uid, salt, attempt)
        return ChatRequest(judge_prompt(q.question, [answers[m][q.uid] for m in order]),
                           request_seed(cfg.seed, q.uid, salt, attempt), j.temperature, j.max_new_tokens,
                           prefill=PREFILL)

    log = step.cache("judge")
    judged = cached_chat(judge_chat, [(f"{q.uid}|a0", request(q, 0)) for q in questions], log, label)
    first = {q.uid: parse_judgment(judged[f"{q.uid}|a0"], len(names)) for q in questions}
    again = [q for q in questions if first[q.uid][0] is None]
    if again:
        judged.update(cached_chat(judge_chat, [(f"{q.uid}|a1", request(q, 1)) for q in again], log,
                                  f"{label}: {len(again)} unreadable, asked again reshuffled"))
    rows = []
    for q in questions:
        attempts = [0] if first[q.uid][0] is not None else [0, 1]
        texts = [judged[f"{q.uid}|a{a}"] for a in attempts]
        parsed = [first[q.uid]] if len(attempts) == 1 else [first[q.uid], parse_judgment(texts[1], len(names))]
        order = shuffled(names, cfg.seed, q.uid, salt, attempts[-1])
        got = parsed[-1][0]
        rows.append({"id": q.uid, "question": q.question, "order": order,
                     "answers": {m: answers[m][q.uid] for m in names}, "judgments": texts,
                     "problems": [why for _, why in parsed],
                     "scores": {m: {s: got[i][s] for s in SCORES} for i, m in enumerate(order)} if got else None,
                     "justifications": {m: got[i]["justification"] for i, m in enumerate(order)} if got else None})
    return rows, summarize(rows, names, cfg.seed)


def judge(cfg, layout, questions: list, students: dict, judge_chat) -> dict:
    """Every student answers the test questions (sampled as the authors': `sample_temperature`, `sample_top_p`),
    then the judge ranks them (`judge_answers`)."""
    folder = layout.judge
    j = cfg.judge_args
    from .refine import ANSWER_PROMPT, answer_prompt

    manifest = {"settings": fingerprint({**cfg.settings("seed", "max_new_tokens", "sample_temperature",
                                                        "sample_top_p"), "judge_tokens": j.max_new_tokens,
                                         "prompts": [ANSWER_PROMPT, JUDGE_PROMPT, PREFILL],
                                         "judge_temperature": j.temperature}),
                "questions": fingerprint([q.to_dict() for q in questions]), "judge": chat_identity(j),
                "students": {name: s.identity for name, s in students.items()}}
    step = StepOutputs(folder, manifest, "results.json", cfg.overwrite_output_dir)
    if step.finished():
        print(f"judge: finished before, skipped ({folder})")
        return read_json(folder / "results.json")
    banner(f"METEOR stage 4: the judge ranks {', '.join(students)} on {len(questions)} test questions")
    answers = {}
    for i, (name, student) in enumerate(students.items()):
        keyed = [(q.uid, ChatRequest(answer_prompt(q.question), request_seed(cfg.seed, q.uid, "test"),
                                     cfg.sample_temperature, cfg.max_new_tokens, cfg.sample_top_p))
                 for q in questions]
        try:
            answers[name] = cached_chat(student, keyed, step.cache(f"answer_{i}"), f"answer ({name})")
        finally:
            student.close()
    rows, results = judge_answers(cfg, questions, answers, judge_chat, step, "judge", "judge")
    atomic_write_jsonl(folder / "scores.jsonl", rows)
    atomic_write_json(folder / "results.json", results)  # last
    return results
