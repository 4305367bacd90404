"""Stage 1a: the student writes a guideline for each domain question (what a good answer must cover).

    guidelines = write_guidelines(cfg, layout, questions, student)   # uid -> guideline text

Greedy, one request per question, cached in guidelines/cache/guideline.jsonl; guidelines.jsonl is
written last. Not handled: judging the guidelines themselves (the teacher only follows them).
"""

from ..io_utils import atomic_write_jsonl, fingerprint, read_jsonl
from ..progress import banner
from ..step import StepOutputs
from .chat import ChatRequest, cached_chat, request_seed
from .prompts import meteor_prompt, prompt_shape

GUIDELINE_PROMPT = prompt_shape("guideline", "question")  # templates/meteor/guideline.jinja, as the manifest records it


def guideline_prompt(question: str) -> str:
    return meteor_prompt("guideline", question=question)


def write_guidelines(cfg, layout, questions: list, student) -> dict[str, str]:
    folder = layout.guidelines
    manifest = {"settings": fingerprint({**cfg.settings("seed", "max_new_tokens"), "prompt": GUIDELINE_PROMPT}),
                "questions": fingerprint([q.to_dict() for q in questions]), "student": student.identity}
    step = StepOutputs(folder, manifest, "guidelines.jsonl", cfg.overwrite_output_dir)
    if step.finished():
        print(f"guidelines: finished before, skipped ({folder})")
        return {row["id"]: row["guideline"] for row in read_jsonl(folder / "guidelines.jsonl")}
    banner(f"METEOR stage 1: the student writes guidelines ({len(questions)} questions)")
    keyed = [(q.uid, ChatRequest(guideline_prompt(q.question), request_seed(cfg.seed, q.uid, "guideline"),
                                 max_new_tokens=cfg.max_new_tokens)) for q in questions]
    texts = cached_chat(student, keyed, step.cache("guideline"), "guidelines")
    atomic_write_jsonl(folder / "guidelines.jsonl",
                       [{"id": q.uid, "question": q.question, "guideline": texts[q.uid]} for q in questions])
    return texts
