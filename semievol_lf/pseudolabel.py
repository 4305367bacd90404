"""SemiEvol steps 2-5: turn the unlabeled set into selected pseudo-labeled training data.

    python -m semievol_lf.pseudolabel recipes/pseudolabel_mmlu.yaml [key=value ...]

1. ICP: the k nearest labeled examples of every unlabeled question (FAISS, one search).
2. CL: n configurations {base, warm} x {0..3 shots} answer every question at temperature 1.
3. Self-justify: the warm model reads the n responses and writes the pseudo-response (Eq. 5).
4. AS: entropy of each pseudo-response under the warm model (Eq. 6), keep H <= tau (Eq. 7-8).

Outputs in `output_dir`: selected.json + dataset_info.json (what `recipes/evolve_<task>.yaml`
trains on, with the labeled set), candidates.jsonl, stats.json, index/, cache/.
Answers in the unlabeled file are never read. Re-running the same recipe resumes.
"""

import dataclasses
import os
from pathlib import Path

from .collaborate import agreed_answer, majority_answer, request_seed, sample_configs
from .config import as_config
from .data import Example, load_task_split
from .data_info import DATA_INFO, alpaca_entry
from .errors import UserError, exit_on_user_error
from .extraction import NO_ANSWER
from .hparams import PseudolabelArguments
from .inference import Timer, banner, check_local_path, check_manifest, model_identity, open_backend, run_cached
from .io_utils import JsonlLog, atomic_write_json, atomic_write_jsonl, fingerprint, read_json
from .prepare import to_alpaca
from .prompts import icp_prompt, justify_prompt, task_prompt
from .selection import mean_nll, select
from .tasks import Task, get_task

# Settings that change no result: left out of the manifest so changing them does not refuse a resume.
_RESULT_NEUTRAL = {"output_dir", "overwrite_output_dir", "batch_size", "embed_batch_size", "backend_args"}


def load_inputs(cfg: PseudolabelArguments) -> tuple[Task, list[Example], list[Example], list[str]]:
    """Check everything that can be checked before a model loads."""
    task = get_task(cfg.task)
    if not (Path(cfg.data_dir) / "labeled.json").is_file():
        raise UserError(f"`data_dir`: {cfg.data_dir} has no labeled.json; run `python -m semievol_lf.prepare "
                        f"--task {task.name} --source YOUR_FILES --out {cfg.data_dir}` first")
    labeled = load_task_split(cfg.data_dir, task, "labeled")
    if not labeled:
        raise UserError(f"{cfg.data_dir}: the labeled set is empty")
    unlabeled = load_task_split(cfg.data_dir, task, "unlabeled")
    excluded: list[str] = []
    if cfg.exclude_ids_file:
        excluded = [str(x) for x in read_json(cfg.exclude_ids_file)]
        skip = set(excluded)
        unlabeled = [u for u in unlabeled if u.uid not in skip]
    check_local_path("model_name_or_path", cfg.model_name_or_path, must_exist=False)
    check_local_path("adapter_name_or_path", cfg.adapter_name_or_path, must_exist=True)
    return task, labeled, unlabeled, excluded


def manifest_of(cfg: PseudolabelArguments, labeled: list[Example], unlabeled: list[Example]) -> dict:
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RESULT_NEUTRAL}
    return {
        "settings": fingerprint(settings),
        "labeled": fingerprint([e.to_dict() for e in labeled]),
        "unlabeled": fingerprint([e.to_dict() for e in unlabeled]),
        "model": model_identity(cfg.model_name_or_path),
        "adapter": model_identity(cfg.adapter_name_or_path),
    }


def _generation_row(gen) -> dict:
    return {"text": gen.text}


def pseudolabel(cfg: PseudolabelArguments) -> dict:
    """Run the whole step; return the stats that are also written to stats.json."""
    from .backends import GenerationRequest, ScoreRequest
    from .chat_format import ChatFormat
    from .retrieval import LabeledIndex

    timer = Timer()
    task, labeled, unlabeled, excluded = load_inputs(cfg)
    out = Path(cfg.output_dir)
    if check_manifest(out, manifest_of(cfg, labeled, unlabeled), cfg.overwrite_output_dir, final="stats.json"):
        print(f"pseudolabel: {out} already holds the finished result of these inputs")
        return read_json(out / "stats.json")
    configs = sample_configs(cfg.models, cfg.shots, cfg.n, cfg.seed)
    n_options = {u.uid: len(u.options) or task.max_options for u in unlabeled}

    banner("Pseudo-label: retrieve (in-context propagation)")
    with timer("retrieve"):
        index = LabeledIndex(out / "index", cfg.embedder, [e.uid for e in labeled], [e.question for e in labeled],
                             cfg.embed_batch_size)
        neighbours = index.neighbours([u.question for u in unlabeled], max(cfg.shots), cfg.embed_batch_size)

    chat = ChatFormat(cfg.model_name_or_path, cfg.template)
    backend = open_backend(cfg, chat)
    chunk = cfg.batch_size if cfg.backend == "hf" else max(cfg.batch_size, 256)
    try:
        banner(f"Pseudo-label: collaborate ({', '.join(c.name for c in configs)})")
        with timer("collaborate"):
            keyed = []
            for u, nbrs in zip(unlabeled, neighbours):
                for c in configs:
                    prompt = icp_prompt(task, u, [labeled[i] for i in nbrs[:c.shots]])
                    keyed.append((f"{u.uid}|{c.name}", GenerationRequest(
                        chat.prompt_ids(prompt), adapter=c.model == "warm", seed=request_seed(cfg.seed, u.uid, c.name),
                        temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)))
            gens = run_cached(backend.generate, keyed, JsonlLog(out / "cache" / "collaborate.jsonl"),
                              _generation_row, chunk, "collaborate")
        responses = {u.uid: [gens[f"{u.uid}|{c.name}"]["text"] for c in configs] for u in unlabeled}
        answers = {uid: [task.extract(r, n_options[uid]) for r in rs] for uid, rs in responses.items()}

        banner(f"Pseudo-label: self-justify ({cfg.justify})")
        with timer("justify"):
            pseudo, justified = _justify(cfg, task, unlabeled, responses, answers, chat, backend, out, chunk,
                                         GenerationRequest, n_options)

        banner("Pseudo-label: entropy under the warm model")
        with timer("score"):
            valid = [u for u in unlabeled if pseudo[u.uid] != NO_ANSWER]
            keyed = []
            for u in valid:
                prompt_ids, response_ids = chat.encode(task_prompt(task, u), task.target(pseudo[u.uid]))
                keyed.append((f"{u.uid}|{pseudo[u.uid]}", ScoreRequest(prompt_ids, response_ids, adapter=True)))
            scores = run_cached(backend.score, keyed, JsonlLog(out / "cache" / "score.jsonl"),
                                lambda lp: {"logprobs": lp}, chunk, "score")
            entropy = {u.uid: mean_nll(scores[f"{u.uid}|{pseudo[u.uid]}"]["logprobs"]) for u in valid}
    finally:
        backend.close()

    banner("Pseudo-label: select")
    tau, keep = select([entropy[u.uid] for u in valid], cfg.theta)
    kept = {u.uid for u, k in zip(valid, keep) if k}
    stats = _stats(cfg, task, configs, unlabeled, excluded, answers, justified, pseudo, tau, kept, timer,
                   index.reused, labeled, responses)
    _write_outputs(cfg, task, out, unlabeled, configs, responses, answers, justified, pseudo, entropy, kept, tau,
                   stats)
    return stats


def _justify(cfg, task, unlabeled, responses, answers, chat, backend, out, chunk, GenerationRequest, n_options):
    """pseudo answer per uid, and the justified response text where the model was asked."""
    pseudo: dict[str, str] = {}
    to_ask = []
    for u in unlabeled:
        agreed = agreed_answer(answers[u.uid])
        if cfg.justify == "vote":
            pseudo[u.uid] = majority_answer(answers[u.uid])
        elif cfg.justify == "disagreements" and agreed is not None:
            pseudo[u.uid] = agreed
        elif cfg.n == 1:  # w/o CL: the single response is the pseudo-response
            pseudo[u.uid] = answers[u.uid][0]
        else:
            to_ask.append(u)
    keyed = [(u.uid, GenerationRequest(
        chat.prompt_ids(justify_prompt(task, u, responses[u.uid])), adapter=True,
        seed=request_seed(cfg.seed, u.uid, "justify"), temperature=cfg.justify_temperature, top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens)) for u in to_ask]
    gens = run_cached(backend.generate, keyed, JsonlLog(out / "cache" / "justify.jsonl"), _generation_row, chunk,
                      "self-justify")
    justified = {u.uid: gens[u.uid]["text"] for u in to_ask}
    for u in to_ask:
        pseudo[u.uid] = task.extract(justified[u.uid], n_options[u.uid])
    return pseudo, justified


def _stats(cfg, task, configs, unlabeled, excluded, answers, justified, pseudo, tau, kept, timer, index_reused,
           labeled, responses) -> dict:
    n = len(unlabeled)
    all_answers = [a for rs in answers.values() for a in rs]
    agreed = sum(agreed_answer(rs) is not None for rs in answers.values())
    calls = len(all_answers) + len(justified) + sum(p != NO_ANSWER for p in pseudo.values())
    return {
        "task": task.name,
        "labeled": len(labeled),
        "unlabeled": n,
        "excluded_already_selected": len(excluded),
        "configs": [c.name for c in configs],
        "justify": cfg.justify,
        "agreement_rate": round(agreed / n, 4) if n else None,
        "extraction_failures": {
            "collaborate": sum(a == NO_ANSWER for a in all_answers),
            "collaborate_rate": round(sum(a == NO_ANSWER for a in all_answers) / max(1, len(all_answers)), 4),
            "justify": sum(pseudo[uid] == NO_ANSWER for uid in justified),
        },
        "dropped_no_answer": sum(p == NO_ANSWER for p in pseudo.values()),
        "theta": cfg.theta,
        "tau": tau,
        "kept": len(kept),
        "kept_rate": round(len(kept) / n, 4) if n else None,
        "model_calls_per_sample": round(calls / n, 3) if n else 0.0,
        "index_reused": index_reused,
        "timings_s": timer.seconds,
    }


def _write_outputs(cfg, task, out, unlabeled, configs, responses, answers, justified, pseudo, entropy, kept, tau,
                   stats) -> None:
    candidates = []
    for u in unlabeled:
        h = entropy.get(u.uid)
        reason = ("no_answer" if pseudo[u.uid] == NO_ANSWER else "kept" if u.uid in kept else "above_tau")
        candidates.append({
            "id": u.uid,
            "candidates": [{"config": c.name, "response": r, "answer": a}
                           for c, r, a in zip(configs, responses[u.uid], answers[u.uid])],
            "justified": justified.get(u.uid),
            "pseudo_answer": pseudo[u.uid],
            "entropy": h,
            "kept": u.uid in kept,
            "reason": reason,
        })
    selected = [to_alpaca(task, dataclasses.replace(u, answer=pseudo[u.uid])) for u in unlabeled if u.uid in kept]
    atomic_write_jsonl(out / "candidates.jsonl", candidates)
    atomic_write_json(out / "selected.json", selected)
    atomic_write_json(out / "selected_ids.json", [u.uid for u in unlabeled if u.uid in kept])
    labeled_file = Path(cfg.data_dir) / "labeled.json"
    atomic_write_json(out / DATA_INFO, {
        f"{task.name}_labeled": alpaca_entry(os.path.relpath(labeled_file, out)),
        f"{task.name}_selected": alpaca_entry("selected.json"),
    })
    atomic_write_json(out / "stats.json", stats)  # written last: its presence means the step finished


def main(cfg: PseudolabelArguments | dict | None = None) -> dict:
    """`main(dict)` for tests and `semievol-lf run`; the CLI reads `recipe.yaml key=value ...`."""
    cfg = as_config(PseudolabelArguments, cfg)
    stats = pseudolabel(cfg)
    print(f"kept {stats['kept']} of {stats['unlabeled']} pseudo-labels (tau={stats['tau']}); "
          f"outputs in {cfg.output_dir}; evolve trains on {Path(cfg.output_dir) / DATA_INFO}")
    return stats


if __name__ == "__main__":
    with exit_on_user_error():
        main()
