"""Stage 2: refinement and iterative training. The student answers with its reasoning, the teacher judges
("correct", or feedback with hints), the student revises: `max_revisions` + 1 attempts at most (the
authors' 3 in total). A question the teacher never accepted keeps its last attempt (`keep_unaccepted`,
the authors' code) or is dropped. Every time the training items grow by `fine_tune_interval`, the
student is fine-tuned on those items (an SFT round of one epoch, which continues the current student) and
the next questions are answered by the new student.

    stats = refine(cfg, layout, questions, adapter, make_student, teacher)

Questions go in blocks of `fine_tune_interval` (each block is answered by the student of that moment,
as batches). The student's answers are sampled as the authors' (`sample_temperature`, `sample_top_p`,
seeded per request). Every request's key names the student round that made it (`q7|m2|i1`: question q7,
student after round 2, revision 1), so a resumed run replays the same decisions from the caches and
skips the rounds whose markers say they finished. refine/trace.jsonl holds every attempt and verdict,
round_K.json the K-th round's data (`accepted`: false on a kept last attempt); stats.json is written last.

The teacher is asked for a machine-readable verdict, a first line `VERDICT: CORRECT` or `VERDICT: INCORRECT`
(templates/meteor/verdict.jinja; a local teacher's reply is started with `PREFILL` for it). `parse_verdict` reads
that line only; a hedged or unreadable reply is feedback, counted as `unreadable` in stats.json, never accepted.
Not handled: a verdict given as JSON, or anywhere but on the first line (it is then unreadable, so feedback).
"""

import re
from pathlib import Path

from ..io_utils import atomic_write_json, atomic_write_jsonl, fingerprint, read_json
from ..llamafactory.dataset_info import DATA_INFO, alpaca_entry
from ..progress import banner
from ..step import StepOutputs
from .chat import ChatRequest, cached_chat, chat_identity, request_seed
from .prompts import meteor_prompt, prompt_shape
from .training import sft_recipe, train

# templates/meteor/{answer,verdict,revise}.jinja with `{field}` where a value goes, as the manifests record them
ANSWER_PROMPT = prompt_shape("answer", "question")
JUDGE_PROMPT = prompt_shape("verdict", "question", "answer")
REVISE_PROMPT = prompt_shape("revise", "question", "answer", "feedback")
PREFILL = "VERDICT:"  # a local teacher's reply starts here (an endpoint's is asked for by the prompt alone)
CORRECT, INCORRECT, UNREADABLE = "correct", "incorrect", "unreadable"  # only CORRECT accepts; the rest is feedback
# a leading reasoning block (its opening tag may be missing: some servers put it in the prompt)
_THINK = re.compile(r"^\s*(?:<think>)?.*?</think>", re.DOTALL | re.IGNORECASE)
_EMPHASIS = re.compile(r"[*_`#>]+")
_VERDICT_LINE = re.compile(r"^\s*verdict\s*:\s*(correct|incorrect)\b\s*(.*)$")
# after a CORRECT line, any of these in the rest of the reply makes it hedged ("VERDICT: CORRECT\nMostly, but ...")
_HEDGE = re.compile(r"\b(however|but|although|though|mostly|partially|partly|largely|generally|somewhat|almost|"
                    r"nearly|not|incomplete|incorrect|inaccurate|imprecise|wrong|missing|misses|lacks?|lacking|"
                    r"mistakes?|errors?|issues?|flaws?|problems?|verdict)\b")


def answer_prompt(question: str) -> str:
    return meteor_prompt("answer", question=question)


def verdict_prompt(question: str, answer: str) -> str:
    return meteor_prompt("verdict", question=question, answer=answer)


def revise_prompt(question: str, answer: str, feedback: str) -> str:
    return meteor_prompt("revise", question=question, answer=answer, feedback=feedback)


def _strip_think(text: str) -> str:
    return _THINK.sub("", text, count=1).strip()


def parse_verdict(text: str) -> str:
    """The teacher's verdict, read from the first line of its reply (after a leading <think>...</think> block;
    markdown emphasis and case ignored). Only a clean `VERDICT: CORRECT` is correct; hedged or unreadable
    replies are `unreadable` (feedback, like `incorrect`).

    "VERDICT: CORRECT" -> correct;  "**Verdict:** correct." -> correct;
    "<think>...</think>VERDICT: CORRECT" -> correct;  "VERDICT: INCORRECT\nYou missed ..." -> incorrect;
    "VERDICT: CORRECT, but incomplete" -> unreadable;
    "VERDICT: CORRECT\nMostly; however ..." -> unreadable;  "Correct." -> unreadable;
    "Evaluation:\n\nVERDICT: CORRECT" -> unreadable;  "" -> unreadable
    """
    lines = [_EMPHASIS.sub("", line).strip().lower() for line in _strip_think(text).splitlines()]
    lines = [line for line in lines if line]
    m = _VERDICT_LINE.match(lines[0]) if lines else None
    if not m:
        return UNREADABLE
    verdict, rest = m.groups()
    if verdict == "incorrect":
        return INCORRECT
    if rest.strip(" .!") or _HEDGE.search("\n".join(lines[1:])):
        return UNREADABLE
    return CORRECT


def feedback_of(text: str) -> str:
    """What the student is shown to revise: the reply without its reasoning block and verdict line.

    "VERDICT: INCORRECT\nMention dropout." -> "Mention dropout.";  "Wrong, see X" -> "Wrong, see X"
    """
    body = _strip_think(text)
    first, _, rest = body.partition("\n")
    if _VERDICT_LINE.match(_EMPHASIS.sub("", first).strip().lower()) and rest.strip():
        return rest.strip()
    return body


def rounds_due(n_items: int, n_trained: int, interval: int) -> list[int]:
    """The SFT rounds to run now: one per `interval` training items not trained on yet.

    (10, 0, 10) -> [1];  (25, 1, 10) -> [2];  (9, 0, 10) -> [];  (20, 0, 10) -> [1, 2]
    """
    return list(range(n_trained + 1, n_items // interval + 1))


def _round_data(folder: Path, k: int, rows: list[dict]) -> str:
    """Write round K's data (alpaca) and its dataset_info entry; return the dataset name."""
    name = f"meteor_refine_{k}"
    atomic_write_json(folder / f"round_{k}.json", rows)
    info_path = folder / DATA_INFO
    info = read_json(info_path) if info_path.is_file() else {}
    info[name] = alpaca_entry(f"round_{k}.json")
    atomic_write_json(info_path, info)
    return name


def refine(cfg, layout, questions: list, adapter: Path, make_student, teacher) -> dict:
    """`make_student(adapter)` gives the student with that adapter (closed by the caller's `close`)."""
    folder = layout.refine
    t = cfg.teacher_args
    manifest = {"settings": fingerprint({**cfg.settings("seed", "max_new_tokens", "max_revisions", "keep_unaccepted",
                                                       "fine_tune_interval", "train_overrides", "sample_temperature",
                                                       "sample_top_p"),
                                         "prompts": [ANSWER_PROMPT, JUDGE_PROMPT, REVISE_PROMPT, PREFILL],
                                         "teacher_tokens": t.max_new_tokens, "teacher_temperature": t.temperature}),
                "questions": fingerprint([q.to_dict() for q in questions]), "teacher": chat_identity(t),
                "student": make_student(adapter).identity}
    step = StepOutputs(folder, manifest, "stats.json", cfg.overwrite_output_dir)
    if step.finished():
        print(f"refine: finished before, skipped ({folder})")
        return read_json(folder / "stats.json")
    interval = cfg.fine_tune_interval
    banner(f"METEOR stage 2: refinement and iterative training ({len(questions)} questions, an SFT round every "
           f"{interval} training items, at most {cfg.max_revisions + 1} attempts each)")
    sampling = {"temperature": cfg.sample_temperature, "top_p": cfg.sample_top_p, "max_new_tokens": cfg.max_new_tokens}
    trace, items, rounds = [], [], []  # items: the training rows, accepted answers and kept last attempts
    verdicts = {CORRECT: 0, INCORRECT: 0, UNREADABLE: 0}
    student = make_student(adapter)
    try:
        for start in range(0, len(questions), interval):
            block = questions[start:start + interval]
            m = len(rounds)  # the student's round: 0 is the stage-1 student
            tag = lambda q, i, m=m: f"{q.uid}|m{m}|i{i}"  # noqa: E731
            keyed = [(tag(q, 0), ChatRequest(answer_prompt(q.question),
                                             request_seed(cfg.seed, tag(q, 0), "answer"), **sampling))
                     for q in block]
            answers = cached_chat(student, keyed, step.cache("answer"), f"answer (student {m})")
            current = {q.uid: answers[tag(q, 0)] for q in block}
            pending = list(block)
            for i in range(cfg.max_revisions + 1):
                keyed = [(tag(q, i), ChatRequest(verdict_prompt(q.question, current[q.uid]),
                                                 request_seed(cfg.seed, tag(q, i), "judge"), t.temperature,
                                                 t.max_new_tokens, prefill=PREFILL)) for q in pending]
                judged = cached_chat(teacher, keyed, step.cache("judge"), f"judge (revision {i})")
                still = []
                for q in pending:
                    verdict = parse_verdict(judged[tag(q, i)])
                    verdicts[verdict] += 1
                    trace.append({"id": q.uid, "student_round": m, "iteration": i, "answer": current[q.uid],
                                  "judgment": judged[tag(q, i)], "verdict": verdict})
                    last = i == cfg.max_revisions
                    if verdict == CORRECT or (last and cfg.keep_unaccepted):
                        items.append({"id": q.uid, "instruction": q.question, "input": "", "output": current[q.uid],
                                      "accepted": verdict == CORRECT, "iteration": i, "student_round": m})
                    if verdict != CORRECT:
                        still.append(q)
                pending = still
                if not pending or i == cfg.max_revisions:
                    break
                keyed = [(tag(q, i + 1), ChatRequest(
                    revise_prompt(q.question, current[q.uid], feedback_of(judged[tag(q, i)])),
                    request_seed(cfg.seed, tag(q, i + 1), "revise"), **sampling)) for q in pending]
                revised = cached_chat(student, keyed, step.cache("revise"), f"revise (revision {i + 1})")
                current.update({q.uid: revised[tag(q, i + 1)] for q in pending})
            for k in rounds_due(len(items), len(rounds), interval):
                rows = items[(k - 1) * interval:k * interval]
                dataset = _round_data(folder, k, rows)
                student.close()
                adapter = train(f"refine_round_{k}", sft_recipe(cfg, "refine", folder, dataset,
                                                                layout.refine_round(k), previous=adapter), layout)
                rounds.append({"round": k, "rows": len(rows), "after_questions": start + len(block),
                               "adapter": str(adapter)})
                student = make_student(adapter)
    finally:
        student.close()
    atomic_write_jsonl(folder / "trace.jsonl", trace)
    atomic_write_json(folder / "items.json", items)
    accepted = sum(row["accepted"] for row in items)
    stats = {"questions": len(questions), "verdicts": verdicts, "accepted": accepted,
             "kept_unaccepted": len(items) - accepted, "dropped": len(questions) - len(items),
             "attempts": cfg.max_revisions + 1, "keep_unaccepted": cfg.keep_unaccepted,
             "fine_tune_interval": interval, "rounds": rounds, "adapter": str(adapter),
             "untrained_items": len(items) - len(rounds) * interval}
    atomic_write_json(folder / "stats.json", stats)  # last
    return stats
