"""Stage 1c: the guideline ablation (METEOR's data-quality comparison). The teacher also answers the
first `quality_questions` distillation questions without the guideline; the judge scores both answers
to each question in one prompt on the five criteria, as in stage 4 (judge.judge_answers).

    results = data_quality(cfg, layout, questions, with_guideline, teacher, judge_chat)
    # quality/cache/plain.jsonl (no-guideline answers), cache/judge.jsonl, scores.jsonl, results.json last

The with-guideline answers are stage 1b's (distill/cache/teacher.jsonl), not asked again. Not handled: training
a second student on the no-guideline data (METEOR compares the data, which is what is measured here).
`results` is judge.summarize's: mean scores with intervals per answer set, the win rate per criterion.
"""

from ..io_utils import atomic_write_json, atomic_write_jsonl, fingerprint, read_json
from ..progress import banner
from ..step import StepOutputs
from .chat import ChatRequest, cached_chat, chat_identity, request_seed
from .judge import JUDGE_PROMPT, PREFILL, judge_answers
from .prompts import meteor_prompt, prompt_shape

PLAIN_PROMPT = prompt_shape("plain", "question")  # templates/meteor/plain.jinja, as the manifest records it
WITH, WITHOUT = "with guidelines", "without guidelines"


def plain_prompt(question: str) -> str:
    return meteor_prompt("plain", question=question)


def data_quality(cfg, layout, questions: list, with_guideline: dict[str, str], teacher, judge_chat) -> dict | None:
    """None when `quality_questions` is 0 (the ablation is off)."""
    questions = questions[:cfg.quality_questions]
    if not questions:
        return None
    folder = layout.quality
    t, j = cfg.teacher_args, cfg.judge_args
    manifest = {"settings": fingerprint({"seed": cfg.seed, "teacher_tokens": t.max_new_tokens,
                                         "teacher_temperature": t.temperature, "judge_tokens": j.max_new_tokens,
                                         "judge_temperature": j.temperature,
                                         "prompts": [PLAIN_PROMPT, JUDGE_PROMPT, PREFILL]}),
                "answers": fingerprint([[q.uid, q.question, with_guideline[q.uid]] for q in questions]),
                "teacher": chat_identity(t), "judge": chat_identity(j)}
    step = StepOutputs(folder, manifest, "results.json", cfg.overwrite_output_dir)
    if step.finished():
        print(f"quality: finished before, skipped ({folder})")
        return read_json(folder / "results.json")
    banner(f"METEOR stage 1: teacher answers with vs without guidelines, judged ({len(questions)} questions)")
    keyed = [(q.uid, ChatRequest(plain_prompt(q.question), request_seed(cfg.seed, q.uid, "plain"),
                                 t.temperature, t.max_new_tokens)) for q in questions]
    answers = {WITH: {q.uid: with_guideline[q.uid] for q in questions},
               WITHOUT: cached_chat(teacher, keyed, step.cache("plain"), "answers without guidelines")}
    rows, results = judge_answers(cfg, questions, answers, judge_chat, step, "judge (data quality)", "quality")
    atomic_write_jsonl(folder / "scores.jsonl", rows)
    atomic_write_json(folder / "results.json", results)  # last
    return results
