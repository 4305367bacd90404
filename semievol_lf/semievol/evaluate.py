"""Accuracy of a model (base, or base + adapter) on a task's test set.

    python -m semievol_lf.evaluate recipes/evaluate_demo.yaml adapter_name_or_path=saves/tiny/demo/evolve

Greedy decoding by default, so two runs give the same numbers. Prompts are rendered with
the recipe's LlamaFactory template. Writes predictions.jsonl (one row per question: response,
extracted answer, gold, correct, entropy of the response and the template's end of turn under the
same model: the tokens Eq. 6 scores for a pseudo-response) and
results.json (accuracy, per-category accuracy, extraction-failure rate, mean entropy).
`rag_k > 0` prepends the k nearest labeled examples (the paper's RAG baseline).
"""

import math
from collections import defaultdict
from pathlib import Path

from ..backends.base import GenerationRequest, ScoreRequest
from ..config import EvaluateArguments, as_config
from ..data.extraction import NO_ANSWER
from ..data.loading import load_prepared_split
from ..data.prompts import icp_prompt
from ..data.tasks import get_task
from ..errors import exit_on_user_error
from ..io_utils import atomic_write_json, atomic_write_jsonl, read_json
from ..progress import banner, setup_logging
from ..step import (
    RESULT_NEUTRAL,
    StepOutputs,
    check_local_path,
    check_prompt_lengths,
    open_backend,
    run_cached,
    step_manifest,
)
from .pseudolabel.collaborate import request_seed
from .pseudolabel.selection import mean_nll


def accuracy_table(rows: list[dict]) -> dict:
    """Recount results from prediction rows (also used by tests and the report)."""
    n = len(rows)
    correct = sum(r["correct"] for r in rows)
    per_cat: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        if r.get("category") is not None:
            per_cat[r["category"]][0] += 1
            per_cat[r["category"]][1] += int(r["correct"])
    entropies = [r["entropy"] for r in rows if r.get("entropy") is not None]
    no_answer = sum(r["pred"] == NO_ANSWER for r in rows)
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else 0.0,
        "no_answer": no_answer,
        "no_answer_rate": no_answer / n if n else 0.0,
        "mean_entropy": sum(entropies) / len(entropies) if entropies else None,
        "per_category": {c: {"n": k, "correct": m, "accuracy": m / k} for c, (k, m) in sorted(per_cat.items())},
    }


def _strip_stop(ids, stop_ids) -> list[int]:
    """The answer's own tokens: vllm/openai end them with the stop token, hf does not."""
    ids = list(ids)
    while ids and ids[-1] in stop_ids:
        ids.pop()
    return ids


def scored_ids(answer_ids, chat) -> tuple[int, ...]:
    """The tokens whose mean NLL is an answer's entropy (paper Fig. 4): the answer's own tokens, then the
    template's end of turn. The same tokens as Eq. 6 scores for a pseudo-response (`chat.encode(prompt,
    response)[1]`), so the test-set and the pseudo-label entropies are one measure."""
    return (*answer_ids, *chat.end_of_turn)


def evaluate(cfg: EvaluateArguments) -> dict:
    from ..llamafactory.chat_format import open_chat_format

    task = get_task(cfg.task)
    examples = load_prepared_split(cfg.data_dir, task, cfg.split)
    labeled = load_prepared_split(cfg.data_dir, task, "labeled") if cfg.rag_k else []
    check_local_path("model_name_or_path", cfg.model_name_or_path, must_exist=False)
    check_local_path("adapter_name_or_path", cfg.adapter_name_or_path, must_exist=True)
    out = Path(cfg.output_dir)
    manifest = step_manifest(cfg, RESULT_NEUTRAL | {"name"}, examples=examples, labeled=labeled)
    step = StepOutputs(out, manifest, "results.json", cfg.overwrite_output_dir)
    if step.finished():
        print(f"evaluate: {out} already holds the finished result of these inputs")
        return read_json(out / "results.json")

    neighbours = [[] for _ in examples]
    if cfg.rag_k:
        from .pseudolabel.retrieval import LabeledIndex

        index = LabeledIndex(out / "index", cfg.embedder, [e.uid for e in labeled], [e.question for e in labeled])
        neighbours = index.neighbours([e.question for e in examples], cfg.rag_k)

    banner(f"Evaluate {cfg.name or 'model'} on {task.name} {cfg.split} ({len(examples)} questions)")
    chat = open_chat_format(cfg)
    adapter = bool(cfg.adapter_name_or_path)
    prompts = {e.uid: chat.prompt_ids(icp_prompt(task, e, [labeled[i] for i in nbrs]))
               for e, nbrs in zip(examples, neighbours)}
    keyed = [(e.uid, GenerationRequest(prompts[e.uid], adapter=adapter, seed=request_seed(cfg.seed, e.uid, "eval"),
                                       temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens))
             for e in examples]
    check_prompt_lengths(keyed, cfg.cutoff_len, "evaluate")  # before the model loads
    backend = open_backend(cfg, chat)
    try:
        gens = run_cached(backend.generate, keyed, step.cache("generate"),
                          lambda g: {"text": g.text, "token_ids": _strip_stop(g.token_ids, chat.stop_ids)},
                          backend.chunk_size, "generate")
        # Entropy of the model's own answer (paper Fig. 4): its generated ids and the end of turn, as Eq. 6.
        keyed = [(e.uid, ScoreRequest(prompts[e.uid], scored_ids(gens[e.uid]["token_ids"], chat), adapter=adapter))
                 for e in examples if gens[e.uid]["token_ids"]]
        scores = run_cached(backend.score, keyed, step.cache("score"),
                            lambda lp: {"logprobs": lp}, backend.chunk_size, "entropy")
    finally:
        backend.close()

    rows = []
    for e in examples:
        response = gens[e.uid]["text"]
        pred = task.extract(response, len(e.options) or task.max_options, e.options)
        h = mean_nll(scores[e.uid]["logprobs"]) if e.uid in scores else math.inf
        rows.append({"id": e.uid, "category": e.category, "response": response, "pred": pred, "gold": e.answer,
                     "correct": task.is_correct(pred, e.answer), "entropy": h if math.isfinite(h) else None})
    results = {"name": cfg.name, "task": task.name, "model": cfg.model_name_or_path,
               "adapter": cfg.adapter_name_or_path, "split": cfg.split, "rag_k": cfg.rag_k, **accuracy_table(rows)}
    atomic_write_jsonl(out / "predictions.jsonl", rows)
    atomic_write_json(out / "results.json", results)  # written last: its presence means the step finished
    return results


def main(cfg: EvaluateArguments | dict | None = None) -> dict:
    cfg = as_config(EvaluateArguments, cfg)
    results = evaluate(cfg)
    print(f"{cfg.name or 'accuracy'}: {results['accuracy']:.4f} ({results['correct']}/{results['n']}), "
          f"no answer {results['no_answer_rate']:.2%} -> {cfg.output_dir}/results.json")
    return results


if __name__ == "__main__":
    setup_logging()
    with exit_on_user_error():
        main()
