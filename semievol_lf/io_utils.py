"""Atomic file writes, append-only JSONL logs and step markers: a killed step leaves the old file or
the new one, never half of one, and a finished step is recognised by the marker it wrote last."""

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import UserError


def _write_temp(path: Path, text: str) -> str:
    """Write `text` to a fsynced temp file beside `path`; return the temp file's name."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from None
    try:
        os.fchmod(fd, _mode_for(path))  # mkstemp makes 0600; a replaced file keeps its mode
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {err.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to a temp file in the same folder, fsync, then rename over `path`."""
    atomic_write_files({path: text})


def atomic_write_files(texts: dict) -> None:
    """Write every file to its temp file first and rename only when all were written, so a full
    disk at the last file leaves every old file as it was: `{path: text, ...}`."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, text in texts.items():
            temps.append((_write_temp(Path(path), text), Path(path)))
        for tmp, path in temps:
            try:
                os.replace(tmp, path)
            except OSError as err:
                raise UserError(f"cannot write {path}: {err.strerror}") from None
    finally:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False, failure: str | None = None) -> Iterator[Path]:
    """Yield a temp path beside `path` for a writer that wants a file name (FAISS, matplotlib,
    `save_pretrained`); when the block ends without error the temp file or folder replaces `path`.

        with atomic_path(out / "labeled.faiss") as tmp:
            faiss.write_index(index, str(tmp))

    An OSError (a full disk, a read-only folder) becomes one UserError: `failure` (default
    "cannot write PATH"), then the system's reason.
    """
    path = Path(path)
    failure = failure or f"cannot write {path}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
            tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it private
        else:
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.fchmod(fd, _mode_for(path))
            os.close(fd)
            tmp = Path(name)
    except OSError as err:
        raise UserError(f"{failure}: {err.strerror}") from None
    try:
        yield tmp
        if directory and path.exists():  # a folder cannot be renamed over a full one: swap it aside first
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"{failure}: {err.strerror or err}") from None
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _mode_for(path: Path) -> int:
    """The mode of the file being replaced, else what `open()` would give a new file."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json_text(obj))


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield rows; a torn last line (the writer was killed mid-line) is ignored."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            yield json.loads(line)


class JsonlLog:
    """Append-only log of finished work; each flush is fsynced so a kill loses at most one batch."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():  # drop a torn last line before appending after it
                data = self.path.read_bytes()
                if data and not data.endswith(b"\n"):
                    os.truncate(self.path, data.rfind(b"\n") + 1)
        except OSError as err:
            raise UserError(f"cannot write {self.path}: {err.strerror}") from None

    def load(self) -> list[dict]:
        return list(read_jsonl(self.path)) if self.path.exists() else []

    def append(self, rows: Iterable[dict]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if not text:
            return
        data = memoryview(text.encode("utf-8"))
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                start = os.lseek(fd, 0, os.SEEK_END)
                try:
                    while data:
                        data = data[os.write(fd, data):]
                    os.fsync(fd)
                except OSError:
                    # A full disk can take part of a batch; cut it so the log keeps whole batches only
                    # (a resumed run recomputes the batch and would log its first rows twice).
                    os.ftruncate(fd, start)
                    raise
            finally:
                os.close(fd)
        except OSError as err:
            raise UserError(f"cannot write {self.path}: {err.strerror}") from None


class StepMarker:
    """The record a step writes last: its presence, holding this `record`, means the step finished
    from these inputs, so a re-run skips it; any other record (or none) means it must run.

        marker = StepMarker(out / "semievol_step.json", {"key": fingerprint(inputs)})
        if not marker.done():
            ...  # the work, writing its outputs
            marker.write()
    """

    def __init__(self, path: str | os.PathLike, record: Any):
        self.path = Path(path)
        self.record = record

    def done(self) -> bool:
        try:
            return self.path.is_file() and read_json(self.path) == self.record
        except ValueError:  # a marker torn by hand; ours are written atomically
            return False

    def write(self) -> None:
        atomic_write_json(self.path, self.record)


def fingerprint(obj: Any) -> str:
    """Stable short hash of a JSON-able object: `fingerprint({"a": 1}) == fingerprint({"a": 1})`."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    """Content hash of a file, or of the weights and configs of a model/adapter folder.

    Logs, checkpoints and `training_args.bin` inside a training output folder are left out: they
    change between identical trainings (a resumed one records its checkpoint) and say nothing about
    the weights.
    """
    path = Path(path).resolve()
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir()
            if p.is_file() and p.name != "training_args.bin" and (
                p.suffix in {".safetensors", ".bin"} or p.name in {"adapter_config.json", "config.json"})
        )
    else:
        files = [path]
    # A run digests the same base model for every step and fine-tune: files unchanged since the last
    # digest (same size and mtime) are not read again.
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _digest(path, stamp)


@lru_cache(maxsize=256)
def _digest(path: Path, stamp: tuple) -> str:
    h = hashlib.sha256()
    for name, _, _ in stamp:
        p = path / name if path.is_dir() else path
        h.update(name.encode())
        if path.is_dir() and p.suffix == ".json":
            h.update(_canonical_config(p))
        else:
            with open(p, "rb") as f:  # in blocks: 16 GB of weights are never held in memory at once
                while block := f.read(1 << 20):
                    h.update(block)
    return h.hexdigest()[:16]


def _canonical_config(path: Path) -> bytes:
    """PEFT writes `target_modules` from a set, in a per-process order: two identical trainings
    would get different digests (and a retrained warm-up would discard every result built on it)."""
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    return json.dumps(cfg, sort_keys=True).encode()
