"""The pseudo-labeling core (SemiEvol steps 2-5) on a list of unlabeled examples.

    samples, _ = label(cfg, task, labeled, unlabeled, out, Timer())  # ICP, CL, self-justify, entropies
    stats = select_and_write(cfg, task, labeled, samples, excluded, timings, index_reused)  # AS + outputs

`label` fills one `Sample` per unlabeled question (cached under `out`, so it resumes);
`select_and_write` applies the percentile threshold over all samples and writes what the
evolve fine-tune reads. The unsharded step, a shard and the merge (`shards.py`) are built from
these two. Answers in the unlabeled file are never read.
"""

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ...backends.base import GenerationRequest, ScoreRequest
from ...config import PseudolabelArguments
from ...data.extraction import NO_ANSWER
from ...data.loading import Example, load_prepared_split
from ...data.prepare import to_alpaca
from ...data.prompts import icp_prompt, justify_prompt, task_prompt
from ...data.tasks import Task, get_task
from ...errors import UserError
from ...io_utils import atomic_write_json, atomic_write_jsonl, fingerprint, read_json
from ...llamafactory.dataset_info import DATA_INFO, alpaca_entry
from ...progress import Timer, banner
from ...step import RESULT_NEUTRAL as STEP_NEUTRAL
from ...step import check_local_path, check_prompt_lengths, open_backend, run_cached, stage_cache, step_manifest
from .collaborate import InferenceConfig, agreed_answer, majority_answer, request_seed, sample_configs
from .selection import mean_nll, select

# `num_shards`/`shard` change no result either: a merge gives the unsharded result (a shard's manifest
# names its shard).
RESULT_NEUTRAL = STEP_NEUTRAL | {"embed_batch_size", "num_shards", "shard"}
# Read only by the selection, after every request: the manifest keeps them apart (SELECTION_KEY), so changing
# them re-selects from the cached answers (with overwrite) and a merge may change them without re-labeling.
SELECTION_ONLY = frozenset({"theta"})
SELECTION_KEY = "selection"  # their manifest key: the only one whose change leaves the cached requests valid


def load_inputs(cfg: PseudolabelArguments) -> tuple[Task, list[Example], list[Example], list[str]]:
    """Check everything that can be checked before a model loads."""
    task = get_task(cfg.task)
    if not (Path(cfg.data_dir) / "labeled.json").is_file():
        raise UserError(f"`data_dir`: {cfg.data_dir} has no labeled.json; run `python -m semievol_lf.prepare "
                        f"--task {cfg.task} --source YOUR_FILES --out {cfg.data_dir}` first")
    labeled = load_prepared_split(cfg.data_dir, task, "labeled")
    if not labeled:
        raise UserError(f"{cfg.data_dir}: the labeled set is empty")
    unlabeled = load_prepared_split(cfg.data_dir, task, "unlabeled")
    excluded: list[str] = []
    if cfg.exclude_ids_file:
        excluded = [str(x) for x in read_json(cfg.exclude_ids_file)]
        skip = set(excluded)
        unlabeled = [u for u in unlabeled if u.uid not in skip]
    check_local_path("model_name_or_path", cfg.model_name_or_path, must_exist=False)
    check_local_path("adapter_name_or_path", cfg.adapter_name_or_path, must_exist=True)
    return task, labeled, unlabeled, excluded


def manifest_of(cfg: PseudolabelArguments, labeled: list[Example], unlabeled: list[Example]) -> dict:
    """What the results depend on; digesting the model and adapter reads their weights, so compute it once."""
    return {**step_manifest(cfg, RESULT_NEUTRAL | SELECTION_ONLY, labeled=labeled, unlabeled=unlabeled),
            SELECTION_KEY: fingerprint({k: getattr(cfg, k) for k in sorted(SELECTION_ONLY)})}


@dataclass
class Sample:
    """One unlabeled question through the step (answers never come from the data file)."""

    example: Example
    responses: list[str] = field(default_factory=list)  # one per configuration, in `configs` order
    prompt_tokens: list[int] = field(default_factory=list)  # length of each configuration's prompt (ICP shows)
    answers: list[str] = field(default_factory=list)  # extracted from `responses`
    justified: str | None = None  # the self-justified response, where `judge_model` was asked
    pseudo: str = NO_ANSWER  # the pseudo answer y~ (letter or number)
    entropy: float | None = None  # Eq. 6, for extractable pseudo answers
    kept: bool = False

    @property
    def uid(self) -> str:
        return self.example.uid

    @property
    def reason(self) -> str:
        return "no_answer" if self.pseudo == NO_ANSWER else "kept" if self.kept else "above_tau"

    def to_row(self) -> dict:
        """What a shard hands to the merge: everything but the selection."""
        return {"id": self.uid, "responses": self.responses, "prompt_tokens": self.prompt_tokens,
                "answers": self.answers, "justified": self.justified, "pseudo_answer": self.pseudo,
                "entropy": self.entropy}

    @classmethod
    def from_row(cls, example: Example, row: dict) -> "Sample":
        return cls(example, row["responses"], row.get("prompt_tokens", []), row["answers"], row["justified"],
                   row["pseudo_answer"], row["entropy"])


def _text(gen) -> dict:
    return {"text": gen.text}


def label(cfg: PseudolabelArguments, task: Task, labeled: list[Example], unlabeled: list[Example], out: Path,
          timer: Timer) -> tuple[list[Sample], bool]:
    """Steps 1-3 and the entropies of step 4, cached under `out`; returns (samples, whether the index was reused)."""
    from ...llamafactory.chat_format import open_chat_format
    from .retrieval import LabeledIndex

    configs = _configs(cfg)
    samples = [Sample(u) for u in unlabeled]
    chat = open_chat_format(cfg)  # first: a missing template fails before the embedder loads

    banner("Pseudo-label: retrieve (in-context propagation)")
    with timer("retrieve"):
        index = LabeledIndex(out / "index", cfg.embedder, [e.uid for e in labeled], [e.question for e in labeled],
                             cfg.embed_batch_size)
        neighbours = index.neighbours([u.question for u in unlabeled], max(cfg.shots), cfg.embed_batch_size)

    keyed = [(f"{s.uid}|{c.name}", GenerationRequest(
        chat.prompt_ids(icp_prompt(task, s.example, [labeled[i] for i in nbrs[:c.shots]])),
        adapter=c.model == "warm", seed=request_seed(cfg.seed, s.uid, c.name),
        temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens))
        for s, nbrs in zip(samples, neighbours) for c in configs]
    check_prompt_lengths(keyed, cfg.cutoff_len, "collaborate")  # before the model loads
    backend = open_backend(cfg, chat)
    chunk = backend.chunk_size
    try:
        banner(f"Pseudo-label: collaborate ({', '.join(c.name for c in configs)})")
        with timer("collaborate"):
            gens = run_cached(backend.generate, keyed, stage_cache(out, "collaborate"), _text, chunk,
                              "collaborate")
            prompt_tokens = {key: len(req.prompt_ids) for key, req in keyed}
            for s in samples:
                s.responses = [gens[f"{s.uid}|{c.name}"]["text"] for c in configs]
                s.prompt_tokens = [prompt_tokens[f"{s.uid}|{c.name}"] for c in configs]
                s.answers = [task.extract(r, _n_options(task, s), s.example.options) for r in s.responses]

        banner(f"Pseudo-label: self-justify ({cfg.justify})")
        with timer("justify"):
            _justify(cfg, task, samples, chat, backend, out, chunk)

        banner(f"Pseudo-label: entropy under the {cfg.judge_model} model")
        with timer("score"):
            valid = [s for s in samples if s.pseudo != NO_ANSWER]
            # Eq. 6 over the response as the fine-tune trains it: `Answer: X` and the template's end of turn
            keyed = [(f"{s.uid}|{s.pseudo}", ScoreRequest(*chat.encode(task_prompt(task, s.example),
                                                                        task.target(s.pseudo)),
                                                          adapter=cfg.judge_model == "warm"))
                     for s in valid]
            scores = run_cached(backend.score, keyed, stage_cache(out, "score"),
                                lambda lp: {"logprobs": lp}, chunk, "score")
            for s in valid:
                s.entropy = mean_nll(scores[f"{s.uid}|{s.pseudo}"]["logprobs"])
    finally:
        backend.close()
    return samples, index.reused


def select_and_write(cfg: PseudolabelArguments, task: Task, labeled: list[Example], samples: list[Sample],
                     excluded: list[str], timings: dict[str, float], index_reused: bool, **extra) -> dict:
    """Step 4's selection over all `samples`, then the outputs; `extra` keys are appended to the stats."""
    banner("Pseudo-label: select")
    valid = [s for s in samples if s.pseudo != NO_ANSWER]
    tau, keep = select([s.entropy for s in valid], cfg.theta)
    for s, k in zip(valid, keep):
        s.kept = k
    configs = _configs(cfg)
    stats = {**_stats(cfg, task, configs, samples, excluded, tau, timings, index_reused, len(labeled)), **extra}
    _write_outputs(cfg, task, Path(cfg.output_dir), configs, samples, stats)
    return stats


def _configs(cfg: PseudolabelArguments) -> list[InferenceConfig]:
    return sample_configs(cfg.models, cfg.shots, cfg.n, cfg.seed, cfg.draw, cfg.repeat_configs)


def _n_options(task: Task, s: Sample) -> int:
    return len(s.example.options) or task.max_options


def _justify(cfg, task: Task, samples: list[Sample], chat, backend, out: Path, chunk: int) -> None:
    """Set each sample's pseudo answer: self-justify (Eq. 5) by the `judge_model`, the agreed answer, or a
    majority vote."""
    to_ask = []
    for s in samples:
        agreed = agreed_answer(s.answers)
        if cfg.justify == "vote":
            s.pseudo = majority_answer(s.answers)
        elif cfg.justify == "disagreements" and agreed is not None:
            s.pseudo = agreed
        elif cfg.n == 1:  # w/o CL: the single response is the pseudo-response
            s.pseudo = s.answers[0]
        else:
            to_ask.append(s)
    keyed = [(s.uid, GenerationRequest(
        chat.prompt_ids(justify_prompt(task, s.example, s.responses)), adapter=cfg.judge_model == "warm",
        seed=request_seed(cfg.seed, s.uid, "justify"), temperature=cfg.justify_temperature, top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens)) for s in to_ask]
    check_prompt_lengths(keyed, cfg.cutoff_len, "self-justify")
    gens = run_cached(backend.generate, keyed, stage_cache(out, "justify"), _text, chunk,
                      "self-justify")
    for s in to_ask:
        s.justified = gens[s.uid]["text"]
        s.pseudo = task.extract(s.justified, _n_options(task, s), s.example.options)


def _stats(cfg, task: Task, configs, samples: list[Sample], excluded: list[str], tau, timings: dict[str, float],
           index_reused: bool, n_labeled: int) -> dict:
    n = len(samples)
    all_answers = [a for s in samples for a in s.answers]
    failures = sum(a == NO_ANSWER for a in all_answers)
    asked = [s for s in samples if s.justified is not None]
    kept = sum(s.kept for s in samples)
    calls = len(all_answers) + len(asked) + sum(s.pseudo != NO_ANSWER for s in samples)
    return {
        "task": task.name,
        "labeled": n_labeled,
        "unlabeled": n,
        "excluded_already_selected": len(excluded),
        "configs": [c.name for c in configs],
        "draw": cfg.draw,
        "justify": cfg.justify,
        # which model wrote the self-justified responses (None: none was asked) and scored the entropies
        "justified_by": cfg.judge_model if asked else None,
        "scored_by": cfg.judge_model,
        "agreement_rate": round(sum(agreed_answer(s.answers) is not None for s in samples) / n, 4) if n else None,
        "extraction_failures": {
            "collaborate": failures,
            "collaborate_rate": round(failures / max(1, len(all_answers)), 4),
            "justify": sum(s.pseudo == NO_ANSWER for s in asked),
            # of those failures: a letter contradicted by the option text after it ("A. positive", A negative)
            "ambiguous": sum(task.read(r, _n_options(task, s), s.example.options).ambiguous
                             for s in samples for r in [*s.responses, *([s.justified] if s.justified else [])]),
        },
        "dropped_no_answer": sum(s.pseudo == NO_ANSWER for s in samples),
        "theta": cfg.theta,
        "tau": tau,
        "kept": kept,
        "kept_rate": round(kept / n, 4) if n else None,
        "model_calls_per_sample": round(calls / n, 3) if n else 0.0,
        "index_reused": index_reused,
        "timings_s": timings,
    }


def _write_outputs(cfg, task: Task, out: Path, configs, samples: list[Sample], stats: dict) -> None:
    candidates = [{
        "id": s.uid,
        "candidates": [{"config": c.name, "model": c.model, "shots": c.shots,
                        "seed": request_seed(cfg.seed, s.uid, c.name), "prompt_tokens": t, "response": r, "answer": a}
                       for c, t, r, a in zip(configs, s.prompt_tokens or [None] * len(configs), s.responses,
                                             s.answers)],
        "justified": s.justified,
        "pseudo_answer": s.pseudo,
        "entropy": s.entropy,
        "kept": s.kept,
        "reason": s.reason,
    } for s in samples]
    kept = [s for s in samples if s.kept]
    atomic_write_jsonl(out / "candidates.jsonl", candidates)
    atomic_write_json(out / "selected.json", [to_alpaca(task, replace(s.example, answer=s.pseudo)) for s in kept])
    atomic_write_json(out / "selected_ids.json", [s.uid for s in kept])
    labeled_file = Path(cfg.data_dir) / "labeled.json"
    atomic_write_json(out / DATA_INFO, {
        f"{task.name}_labeled": alpaca_entry(os.path.relpath(labeled_file, out)),
        f"{task.name}_selected": alpaca_entry("selected.json"),
    })
    atomic_write_json(out / "stats.json", stats)  # written last: its presence means the step finished


