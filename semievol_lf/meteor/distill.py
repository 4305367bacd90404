"""Stage 1b: the teacher answers each question following the student's guideline; the answers are the
SFT data of the student (alpaca rows: instruction = the question, output = the teacher's answer).

    dataset_dir = distill(cfg, layout, questions, guidelines, teacher)   # distill/sft.json + dataset_info.json

The guideline steers the teacher only: the student is trained on question -> answer, as it will be
asked. An empty answer is dropped and counted. The guideline vs no-guideline ablation (METEOR's
data-quality comparison) is quality.py.
"""

from ..errors import UserError
from ..io_utils import atomic_write_json, fingerprint, read_json
from ..llamafactory.dataset_info import DATA_INFO, alpaca_entry
from ..progress import banner
from ..step import StepOutputs
from .chat import ChatRequest, cached_chat, chat_identity, request_seed
from .prompts import meteor_prompt, prompt_shape

DISTILL_PROMPT = prompt_shape("distill", "question", "guideline")  # templates/meteor/distill.jinja, for the manifest
SFT_DATASET = "meteor_distilled"


def distill_prompt(question: str, guideline: str) -> str:
    return meteor_prompt("distill", question=question, guideline=guideline)


def distill(cfg, layout, questions: list, guidelines: dict[str, str], teacher) -> dict:
    """The stage's stats; its data is `layout.distill`/sft.json, dataset `meteor_distilled`; the teacher's
    answers (empty ones included) are `distill_answers(layout)`."""
    folder = layout.distill
    t = cfg.teacher_args
    manifest = {"settings": fingerprint({"seed": cfg.seed, "max_new_tokens": t.max_new_tokens,
                                         "temperature": t.temperature, "prompt": DISTILL_PROMPT}),
                "guidelines": fingerprint([[q.uid, q.question, guidelines[q.uid]] for q in questions]),
                "teacher": chat_identity(t)}
    step = StepOutputs(folder, manifest, "stats.json", cfg.overwrite_output_dir)
    if step.finished():
        print(f"distill: finished before, skipped ({folder})")
        return read_json(folder / "stats.json")
    banner(f"METEOR stage 1: the teacher answers following the guidelines ({len(questions)} questions)")
    keyed = [(q.uid, ChatRequest(distill_prompt(q.question, guidelines[q.uid]),
                                 request_seed(cfg.seed, q.uid, "distill"), t.temperature, t.max_new_tokens))
             for q in questions]
    answers = cached_chat(teacher, keyed, step.cache("teacher"), "distill")
    rows = [{"id": q.uid, "instruction": q.question, "input": "", "output": answers[q.uid]}
            for q in questions if answers[q.uid]]
    if not rows:
        raise UserError(f"distill: the teacher gave no answer to any of {len(questions)} questions; see "
                        f"{folder / 'cache' / 'teacher.jsonl'}")
    atomic_write_json(folder / "sft.json", rows)
    atomic_write_json(folder / DATA_INFO, {SFT_DATASET: alpaca_entry("sft.json")})
    stats = {"questions": len(questions), "rows": len(rows), "empty_answers": len(questions) - len(rows)}
    atomic_write_json(folder / "stats.json", stats)  # last: its presence means the step finished
    return stats


def distill_answers(layout) -> dict[str, str]:
    """uid -> the teacher's answer following the guideline (stage 1b's cache, empty answers included)."""
    from ..io_utils import read_jsonl

    return {row["key"]: row["text"] for row in read_jsonl(layout.distill / "cache" / "teacher.jsonl")}
