"""What pseudolabel and evaluate share: checking inputs before any model loads, opening the
chat format and backend, and running requests through a resumable cache.

The cache is an append-only JSONL of finished requests. Requests run in fixed chunks of the
full, deterministic request list; a chunk is logged whole or not at all, so a resumed run
computes exactly the chunks an uninterrupted run would, in the same batches.
"""

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from . import faults
from .errors import UserError
from .hparams import InferenceArguments
from .io_utils import JsonlLog, atomic_write_json, file_digest, read_json

logger = logging.getLogger("semievol_lf")


def banner(text: str) -> None:
    logger.info(f"*** {text} ***")
    print(f"*** {text} ***", flush=True)


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


def check_manifest(output_dir: Path, manifest: dict, overwrite: bool, final: str) -> bool:
    """Refuse to mix results of other inputs; record the inputs of a fresh run.

    Returns True when `output_dir` already holds the finished result (`final`) of these inputs.
    """
    path = output_dir / "manifest.json"
    if path.is_file():
        old = read_json(path)
        if old == manifest:
            return (output_dir / final).is_file()
        if not overwrite:
            changed = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise UserError(
                f"{output_dir} holds results made from other inputs (changed: {', '.join(changed)}). "
                "Use another `output_dir`, or `overwrite_output_dir=true` to discard them."
            )
        try:
            for stale in [*output_dir.glob("cache/*.jsonl"), output_dir / final]:
                stale.unlink(missing_ok=True)
        except OSError as err:
            raise UserError(f"cannot clear {output_dir}: {err.strerror}") from None
    atomic_write_json(path, manifest)  # creates output_dir
    return False


def open_backend(cfg: InferenceArguments, chat):
    from .backends import load_backend

    kwargs = dict(cfg.backend_args)
    if cfg.backend == "hf":
        kwargs.setdefault("batch_size", cfg.batch_size)
        kwargs.setdefault("decode", chat.decode)
    kwargs.setdefault("stop_ids", chat.stop_ids)
    return load_backend(cfg.backend, cfg.model_name_or_path, cfg.adapter_name_or_path, **kwargs)


def run_cached(call: Callable[[list], list], keyed: list[tuple[str, object]], log: JsonlLog,
               encode: Callable[[object], dict], chunk_size: int, desc: str) -> dict[str, dict]:
    """Run `call` on the requests whose keys are not in `log`, chunk by chunk; return key -> result.

    `keyed` is [(key, request)] in a fixed order; `encode` turns one backend result into a
    JSON-able dict that is logged with its key.
    """
    done = {row["key"]: row for row in log.load()}
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
    if computed:
        logger.info(f"{desc}: computed {computed}, reused {len(keyed) - computed}")
    return done


class Timer:
    """`with timer("collaborate"): ...` accumulates seconds per stage."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - start, 3)
