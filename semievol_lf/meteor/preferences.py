"""Stage 3: self-training by progressive compute. For each domain question the student answers at low
compute (one greedy answer, `low_max_new_tokens`) and at high compute; the high-compute answer is the
preferred one (`chosen`), the low-compute one `rejected`: pairs for LlamaFactory's DPO stage.

High compute (`high_compute`):
  best_of_k    `num_samples` samples (temperature `sample_temperature`, `low_max_new_tokens`), the best
               under the student's own judgment: the highest mean log-probability of the answer under the
               student (num_samples x the generation FLOPs, plus the scoring pass).
  long_budget  one greedy answer with `high_max_new_tokens`.

    stats = preferences(cfg, layout, questions, student)   # preferences/pairs.json + dataset_info.json

A pair whose two answers are the same text teaches nothing: it is dropped and counted, as is a
question with an empty answer. candidates.jsonl keeps every answer and score. Not handled: judging by
a separate reward model.
"""

from ..errors import UserError
from ..io_utils import atomic_write_json, atomic_write_jsonl, fingerprint, read_json
from ..llamafactory.dataset_info import DATA_INFO
from ..progress import banner
from ..step import StepOutputs
from .chat import ChatRequest, cached_chat, cached_scores, request_seed

PREFERENCE_DATASET = "meteor_preferences"


def pairwise_entry(file_name: str) -> dict:
    """LlamaFactory's pairwise (ranking) alpaca entry: chosen and rejected responses to one prompt."""
    return {"file_name": file_name, "formatting": "alpaca", "ranking": True,
            "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}}


def best_of(samples: list[str], scores: list[float]) -> int:
    """Index of the best non-empty sample (highest score; the first on ties); -1 when all are empty.

    (["a", "b", ""], [-2.0, -1.0, 0.0]) -> 1
    """
    best = -1
    for i, (text, score) in enumerate(zip(samples, scores)):
        if text and (best < 0 or score > scores[best]):
            best = i
    return best


def preferences(cfg, layout, questions: list, student) -> dict:
    from .refine import ANSWER_PROMPT, answer_prompt

    folder = layout.preferences
    manifest = {"settings": fingerprint({**cfg.settings("seed", "high_compute", "num_samples", "sample_temperature",
                                                        "low_max_new_tokens", "high_max_new_tokens"),
                                         "prompt": ANSWER_PROMPT}),
                "questions": fingerprint([q.to_dict() for q in questions]), "student": student.identity}
    step = StepOutputs(folder, manifest, "stats.json", cfg.overwrite_output_dir)
    if step.finished():
        print(f"preferences: finished before, skipped ({folder})")
        return read_json(folder / "stats.json")
    banner(f"METEOR stage 3: low- against high-compute answers ({cfg.high_compute}, {len(questions)} questions)")
    prompts = {q.uid: answer_prompt(q.question) for q in questions}
    low = cached_chat(student, [(q.uid, ChatRequest(prompts[q.uid], request_seed(cfg.seed, q.uid, "low"),
                                                    max_new_tokens=cfg.low_max_new_tokens)) for q in questions],
                      step.cache("low"), "low compute")
    candidates = []
    if cfg.high_compute == "best_of_k":
        keys = [(q.uid, f"{q.uid}|s{j}") for q in questions for j in range(cfg.num_samples)]
        samples = cached_chat(student, [(key, ChatRequest(prompts[uid], request_seed(cfg.seed, key, "sample"),
                                                          cfg.sample_temperature, cfg.low_max_new_tokens))
                                        for uid, key in keys], step.cache("sample"),
                              f"high compute ({cfg.num_samples} samples)")
        scored = cached_scores(student, [(key, (prompts[uid], samples[key])) for uid, key in keys if samples[key]],
                               step.cache("score"), "own judgment")
        high = {}
        for q in questions:
            texts = [samples[f"{q.uid}|s{j}"] for j in range(cfg.num_samples)]
            scores = [scored.get(f"{q.uid}|s{j}", float("-inf")) for j in range(cfg.num_samples)]
            best = best_of(texts, scores)
            high[q.uid] = texts[best] if best >= 0 else ""
            candidates.append({"id": q.uid, "low": low[q.uid], "samples": texts, "scores": scores, "best": best,
                               "high": high[q.uid]})
    else:
        high = cached_chat(student, [(q.uid, ChatRequest(prompts[q.uid], request_seed(cfg.seed, q.uid, "high"),
                                                         max_new_tokens=cfg.high_max_new_tokens))
                                     for q in questions], step.cache("high"), "high compute (long budget)")
        candidates = [{"id": q.uid, "low": low[q.uid], "high": high[q.uid]} for q in questions]
    pairs, same, empty = [], 0, 0
    for q in questions:
        if not low[q.uid] or not high[q.uid]:
            empty += 1
        elif low[q.uid] == high[q.uid]:
            same += 1
        else:
            pairs.append({"id": q.uid, "instruction": q.question, "input": "", "chosen": high[q.uid],
                          "rejected": low[q.uid]})
    if not pairs:
        raise UserError(f"preferences: no pair of different answers among {len(questions)} questions ({same} the "
                        f"same, {empty} empty); raise `num_samples` or `sample_temperature`, see "
                        f"{folder / 'candidates.jsonl'}")
    atomic_write_jsonl(folder / "candidates.jsonl", candidates)
    atomic_write_json(folder / "pairs.json", pairs)
    atomic_write_json(folder / DATA_INFO, {PREFERENCE_DATASET: pairwise_entry("pairs.json")})
    stats = {"questions": len(questions), "pairs": len(pairs), "same_answer": same, "empty_answer": empty,
             "high_compute": cfg.high_compute}
    atomic_write_json(folder / "stats.json", stats)  # last
    return stats
