"""The harness of the inference steps (pseudolabel, evaluate, a pseudolabel shard): what they
depend on, whether their output folder already holds the answer, and a resumable request cache.

    step = StepOutputs(out, step_manifest(cfg, NEUTRAL, labeled=labeled), final="results.json",
                       overwrite=cfg.overwrite_output_dir)
    if step.finished(): return read_json(out / "results.json")
    backend = open_backend(cfg, chat)
    gens = run_cached(backend.generate, keyed, step.cache("generate"), encode, backend.chunk_size, "generate")

The output folder holds manifest.json (written first: the inputs), cache/*.jsonl (finished
requests) and the step's final file (written last). The cache is an append-only JSONL;
requests run in fixed chunks of the full, deterministic request list and a chunk is logged
whole or not at all, so a resumed run computes exactly the chunks an uninterrupted run would,
in the same batches; a backend that keeps a window of requests in flight (openai) gets every
request still to do at once and its answers are logged as they arrive (each request carries
its own seed, so its answer does not depend on its batch). Not handled here: what the requests
are (the steps build them).
"""

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from . import faults
from .errors import UserError
from .io_utils import JsonlLog, atomic_write_json, file_digest, fingerprint, read_json
from .progress import logger

# Settings of every inference step that change no result: left out of the manifest, so changing
# them never refuses a resume.
RESULT_NEUTRAL = frozenset({"output_dir", "overwrite_output_dir", "batch_size", "backend_args", "chat_format",
                            "cutoff_len", "max_model_len", "gpu_memory_utilization", "tensor_parallel_size"})


def check_local_path(key: str, value: str | None, must_exist: bool) -> None:
    """A path that looks local must exist; a hub id (org/name) is left to the loader."""
    if not value:
        return
    looks_local = value.startswith((".", "/", "~")) or value.count("/") != 1
    if (must_exist or looks_local) and not Path(value).expanduser().exists():
        raise UserError(f"`{key}`: {value} does not exist")


def model_identity(path: str | None) -> str | None:
    """Content digest of a local model/adapter folder (so retraining invalidates results), else its name."""
    if path and Path(path).is_dir():
        return file_digest(path)
    return path


def settings_fingerprint(cfg: Any, neutral: frozenset[str] | set[str]) -> str:
    return fingerprint({k: v for k, v in dataclasses.asdict(cfg).items() if k not in neutral})


def step_manifest(cfg: Any, neutral: frozenset[str] | set[str], **datasets: list) -> dict:
    """What a step's results depend on: its settings, its data (`name=[Example, ...]`), the model and
    adapter weights. Digesting the weights reads them, so compute a manifest once per step."""
    return {
        "settings": settings_fingerprint(cfg, neutral),
        **{name: fingerprint([e.to_dict() for e in examples]) for name, examples in datasets.items()},
        "model": model_identity(cfg.model_name_or_path),
        "adapter": model_identity(cfg.adapter_name_or_path),
    }


class StepOutputs:
    """An inference step's output folder: manifest.json first, cache/ while it runs, `final` last."""

    def __init__(self, folder: str | Path, manifest: dict, final: str, overwrite: bool,
                 cache_neutral: frozenset[str] = frozenset()):
        self.folder = Path(folder)
        self.manifest = manifest
        self.final = final
        self.overwrite = overwrite
        self.cache_neutral = cache_neutral  # manifest keys read only after the requests (pseudolabel's selection)

    def finished(self) -> bool:
        """True when the folder already holds the finished result of these inputs; otherwise make it
        ready for this run: refuse results of other inputs (or clear them with `overwrite`), and record
        the inputs."""
        path = self.folder / "manifest.json"
        if path.is_file():
            old = read_json(path)
            if old == self.manifest:
                return (self.folder / self.final).is_file()
            changed = sorted(k for k in set(old) | set(self.manifest) if old.get(k) != self.manifest.get(k))
            requests_hold = set(changed) <= self.cache_neutral  # then only the final outputs are redone
            if not self.overwrite:
                raise UserError(
                    f"{self.folder} holds results made from other inputs (changed: {', '.join(changed)}). "
                    "Use another `output_dir`, or `overwrite_output_dir=true` to "
                    + ("redo the final outputs from its cached answers (every request is reused)." if requests_hold
                       else "discard them.")
                )
            try:
                for stale in [*([] if requests_hold else self.folder.glob("cache/*.jsonl")), self.folder / self.final]:
                    stale.unlink(missing_ok=True)
            except OSError as err:
                raise UserError(f"cannot clear {self.folder}: {err.strerror}") from None
        atomic_write_json(path, self.manifest)  # creates the folder
        return False

    def cache(self, stage: str) -> JsonlLog:
        return stage_cache(self.folder, stage)


def stage_cache(folder: str | Path, stage: str) -> JsonlLog:
    """The resumable request log of one stage of a step writing to `folder`: cache/STAGE.jsonl."""
    return JsonlLog(Path(folder) / "cache" / f"{stage}.jsonl")


def check_prompt_lengths(keyed: list[tuple[str, Any]], cutoff_len: int, stage: str, hint: str | None = None) -> None:
    """Refuse, before a model sees them, prompts longer than `cutoff_len` tokens (`keyed`: [(key, request)]);
    `hint`: what to change (default: SemiEvol's keys)."""
    too_long = [(len(req.prompt_ids), key) for key, req in keyed if len(req.prompt_ids) > cutoff_len]
    if too_long:
        n, key = max(too_long)
        raise UserError(f"{stage}: {len(too_long)} prompt(s) are longer than `cutoff_len` ({cutoff_len} tokens), the "
                        f"longest {n} tokens ({key}); " + (hint or "raise `cutoff_len` (with vllm it also sets "
                        "`max_model_len`), or lower `k` (ICP demonstrations) or `max_new_tokens` (self-justify "
                        "quotes n responses)"))


def open_backend(cfg: Any, chat):
    """The step's backend, given what every backend may need from the step and the chat format."""
    from .backends import load_backend

    # backend_kwargs: dtype and the vllm GPU settings, the checked `backend_args` (vllm's `engine_kwargs` spread out)
    kwargs = {"stop_ids": chat.stop_ids, "decode": chat.decode, "batch_size": cfg.batch_size, **cfg.backend_kwargs()}
    backend = load_backend(cfg.backend, cfg.model_name_or_path, cfg.adapter_name_or_path, **kwargs)
    logger.info(f"{getattr(backend, 'description', cfg.backend + ' backend')}; chosen by "
                f"{getattr(cfg, 'backend_reason', '`backend`')}")
    return backend


def run_cached(call: Callable[[list], list], keyed: list[tuple[str, object]], log: JsonlLog,
               encode: Callable[[object], dict], chunk_size: int, desc: str) -> dict[str, dict]:
    """Run `call` on the requests whose keys are not in `log`; return key -> result.

    `keyed` is [(key, request)] in a fixed order; `encode` turns one backend result into a
    JSON-able dict that is logged with its key. `call` runs chunk by chunk (`chunk_size` requests,
    each chunk logged whole), unless it is a backend's `generate` or `score` and the backend keeps
    a window of requests in flight (`generate_each` / `score_each`, the openai backend): then all
    the requests still to do go in one window and each answer is logged as it arrives (`_streamed`).
    """
    done = {row["key"]: row for row in log.load()}
    each = _each_form(call)
    if each is not None:
        todo = [(k, req) for k, req in keyed if k not in done]
        computed = _streamed(each, todo, log, encode, done, desc, len(keyed))
    else:
        computed = _chunked(call, keyed, log, encode, done, chunk_size, desc)
    if computed:
        logger.info(f"{desc}: computed {computed}, reused {len(keyed) - computed}")
    return done


def _each_form(call: Callable) -> Callable | None:
    """backend.generate -> backend.generate_each where the backend streams its answers; else None."""
    owner, name = getattr(call, "__self__", None), getattr(call, "__name__", "")
    return getattr(owner, f"{name}_each", None) if owner is not None else None


def _chunked(call, keyed, log: JsonlLog, encode, done: dict, chunk_size: int, desc: str) -> int:
    """Fixed chunks of the full request list, so a resumed run computes exactly the chunks an
    uninterrupted run would, in the same batches."""
    chunks = [keyed[i:i + chunk_size] for i in range(0, len(keyed), chunk_size)]
    todo = [c for c in chunks if not all(k in done for k, _ in c)]
    computed = 0
    with tqdm(total=len(keyed), initial=len(keyed) - sum(len(c) for c in todo), desc=desc, unit="req") as bar:
        for chunk in todo:
            results = call([req for _, req in chunk])
            rows = [{"key": k, **encode(r)} for (k, _), r in zip(chunk, results)]
            log.append(rows)
            faults.chunk_appended(log.path)  # SEMIEVOL_FAULT: the kill tests' exact stop
            done.update({row["key"]: row for row in rows})
            computed += len(chunk)
            bar.update(len(chunk))
    return computed


STREAM_FLUSH_S = 1.0  # a streamed stage appends what arrived at most this often (one fsync per append)


def _streamed(each, todo: list, log: JsonlLog, encode, done: dict, desc: str, total: int) -> int:
    """All of `todo` in one window; answers are appended to `log` as they arrive (every
    STREAM_FLUSH_S seconds, and whatever arrived when the window stops, by an error too)."""
    rows: list[dict] = []
    computed = 0
    last = time.monotonic()

    def flush() -> None:
        nonlocal rows, last
        if rows:
            log.append(rows)
            faults.chunk_appended(log.path)  # SEMIEVOL_FAULT counts appends
            done.update({row["key"]: row for row in rows})
            rows, last = [], time.monotonic()

    with tqdm(total=total, initial=total - len(todo), desc=desc, unit="req") as bar:
        try:
            for i, result in each([req for _, req in todo]):
                rows.append({"key": todo[i][0], **encode(result)})
                computed += 1
                bar.update(1)
                if time.monotonic() - last >= STREAM_FLUSH_S:
                    flush()
        finally:
            flush()
    return computed
