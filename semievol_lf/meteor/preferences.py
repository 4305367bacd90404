"""Stage 3: self-evolution. For each domain question the student answers the stage-2 prompt greedily and
`num_samples` times sampled (temperature `sample_temperature`, top-p `sample_top_p`), every answer with
the same length limit (`max_new_tokens`, as answers everywhere else); one rule ranks all of them, the
greedy one included, and the best is `chosen` against the worst `rejected`: the pairs of stage 3's
preference fine-tune (LlamaFactory's `dpo` stage, SimPO loss: training.py).

`preference_rule`:
  longer      the answer with the most tokens (the student's tokenizer) against the one with the fewest:
              more reasoning preferred, the authors' rule (their one sample against the greedy answer).
  likelihood  the highest mean log-probability of the answer under the student against the lowest.

    stats = preferences(cfg, layout, questions, student)   # preferences/pairs.json + dataset_info.json

A question yields no pair when fewer than two answers are non-empty (`empty`), when its answers are all
the same text (`same_answer`), or when the rule cannot tell the best from the worst (`tie`: equal token
counts or scores; the authors' code then prefers the greedy answer). candidates.jsonl keeps every answer,
its measure and the decision. Not handled: a separate reward model.
"""

from ..errors import UserError
from ..io_utils import atomic_write_json, atomic_write_jsonl, fingerprint, read_json
from ..llamafactory.dataset_info import DATA_INFO
from ..progress import banner
from ..step import StepOutputs
from .chat import ChatRequest, cached_chat, cached_scores, request_seed

PREFERENCE_DATASET = "meteor_preferences"
EMPTY, SAME, TIE = "empty", "same_answer", "tie"


def pairwise_entry(file_name: str) -> dict:
    """LlamaFactory's pairwise (ranking) alpaca entry: chosen and rejected responses to one prompt."""
    return {"file_name": file_name, "formatting": "alpaca", "ranking": True,
            "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}}


def pick_pair(texts: list[str], measures: list[float]) -> tuple[int, int] | str:
    """(chosen, rejected): the non-empty answer with the highest measure against the one with the lowest
    (the first of equal ones: the greedy answer is texts[0]); or why there is no pair (EMPTY, SAME, TIE).

    (["short", "a longer one"], [1, 3]) -> (1, 0);  (["a b c", "a"], [3, 1]) -> (0, 1);
    (["x", "y"], [2, 2]) -> "tie";  (["x", "x"], [1, 1]) -> "same_answer";  (["x", ""], [1, 0]) -> "empty"
    """
    live = [i for i, text in enumerate(texts) if text]
    if len(live) < 2:
        return EMPTY
    if len({texts[i] for i in live}) == 1:
        return SAME
    best = max(live, key=lambda i: (measures[i], -i))
    worst = min(live, key=lambda i: (measures[i], i))
    if measures[best] == measures[worst]:
        return TIE
    return best, worst


def preferences(cfg, layout, questions: list, student) -> dict:
    from .refine import ANSWER_PROMPT, answer_prompt

    folder = layout.preferences
    manifest = {"settings": fingerprint({**cfg.settings("seed", "preference_rule", "num_samples", "sample_temperature",
                                                        "sample_top_p", "max_new_tokens"),
                                         "prompt": ANSWER_PROMPT}),
                "questions": fingerprint([q.to_dict() for q in questions]), "student": student.identity}
    step = StepOutputs(folder, manifest, "stats.json", cfg.overwrite_output_dir)
    if step.finished():
        print(f"preferences: finished before, skipped ({folder})")
        return read_json(folder / "stats.json")
    k = cfg.num_samples
    banner(f"METEOR stage 3: self-evolution, the greedy answer and {k} sample(s) per question ranked by "
           f"`{cfg.preference_rule}` ({len(questions)} questions)")
    prompts = {q.uid: answer_prompt(q.question) for q in questions}
    greedy = cached_chat(student, [(q.uid, ChatRequest(prompts[q.uid], request_seed(cfg.seed, q.uid, "greedy"),
                                                       max_new_tokens=cfg.max_new_tokens)) for q in questions],
                         step.cache("greedy"), "greedy answers")
    keys = [(q.uid, f"{q.uid}|s{j}") for q in questions for j in range(k)]
    sampled = cached_chat(student, [(key, ChatRequest(prompts[uid], request_seed(cfg.seed, key, "sample"),
                                                      cfg.sample_temperature, cfg.max_new_tokens, cfg.sample_top_p))
                                    for uid, key in keys], step.cache("sample"), f"sampled answers ({k} each)")
    texts = {q.uid: [greedy[q.uid], *[sampled[f"{q.uid}|s{j}"] for j in range(k)]] for q in questions}
    if cfg.preference_rule == "longer":
        flat = [t for q in questions for t in texts[q.uid]]
        counts = iter(student.count_tokens(flat))
        measures = {q.uid: [next(counts) for _ in texts[q.uid]] for q in questions}
    else:  # likelihood: every answer scored by the student, the greedy one included
        keyed = [(f"{q.uid}|c{i}", (prompts[q.uid], t)) for q in questions for i, t in enumerate(texts[q.uid]) if t]
        scored = cached_scores(student, keyed, step.cache("score"), "the student's likelihood")
        measures = {q.uid: [scored.get(f"{q.uid}|c{i}", float("-inf")) for i in range(k + 1)] for q in questions}
    candidates, pairs = [], []
    dropped = {EMPTY: 0, SAME: 0, TIE: 0}
    for q in questions:
        decision = pick_pair(texts[q.uid], measures[q.uid])
        kinds = ["greedy", *[f"sample {j}" for j in range(k)]]
        candidates.append({"id": q.uid, "answers": texts[q.uid], "kinds": kinds, "measures": measures[q.uid],
                           "decision": decision})
        if isinstance(decision, str):
            dropped[decision] += 1
            continue
        chosen, rejected = decision
        pairs.append({"id": q.uid, "instruction": q.question, "input": "", "chosen": texts[q.uid][chosen],
                      "rejected": texts[q.uid][rejected], "chosen_is": candidates[-1]["kinds"][chosen]})
    atomic_write_jsonl(folder / "candidates.jsonl", candidates)
    if not pairs:
        raise UserError(f"preferences: no pair among {len(questions)} questions ({dropped[SAME]} with one answer "
                        f"text, {dropped[TIE]} ties, {dropped[EMPTY]} with fewer than two answers); raise "
                        f"`num_samples` or `sample_temperature`, see {folder / 'candidates.jsonl'}")
    atomic_write_json(folder / "pairs.json", pairs)
    atomic_write_json(folder / DATA_INFO, {PREFERENCE_DATASET: pairwise_entry("pairs.json")})
    stats = {"questions": len(questions), "pairs": len(pairs), **dropped, "rule": cfg.preference_rule,
             "samples": k, "greedy_chosen": sum(p["chosen_is"] == "greedy" for p in pairs)}
    atomic_write_json(folder / "stats.json", stats)  # last
    return stats
