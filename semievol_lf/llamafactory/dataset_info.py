"""dataset_info.json entries: write ours, and merge them into someone else's file safely.

Merging never loses an existing entry, refuses to replace a different entry of the same
name unless `force`, keeps a backup of the old file and writes the new one atomically
(a kill leaves the old file or the new one, never half of either).
"""

import json
import os
import shutil
from pathlib import Path

from ..errors import UserError
from ..io_utils import atomic_path, atomic_write_json

DATA_INFO = "dataset_info.json"


def alpaca_entry(file_name: str) -> dict:
    return {"file_name": file_name, "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"}}


def split_entries(task: str, data_dir: str | Path, dataset_dir: str | Path,
                  splits: tuple[str, ...] = ("labeled", "test")) -> dict:
    """`{task}_{split}` entries whose file names are relative to `dataset_dir`."""
    return {f"{task}_{split}": alpaca_entry(os.path.relpath(Path(data_dir) / f"{split}.json", dataset_dir))
            for split in splits}


def read_data_info(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); fix or move it before merging") from None
    if not isinstance(info, dict):
        raise UserError(f"{path}: expected a JSON object of dataset entries")
    return info


def absolutise(entries: dict, base_dir: str | Path) -> dict:
    """Make `file_name`s absolute so the entries work from any `dataset_dir`."""
    out = {}
    for name, entry in entries.items():
        entry = dict(entry)
        if "file_name" in entry and not os.path.isabs(entry["file_name"]):
            entry["file_name"] = str((Path(base_dir) / entry["file_name"]).resolve())
        out[name] = entry
    return out


def merge_entries(existing: dict, new: dict, force: bool = False, where: str = DATA_INFO) -> tuple[dict, list[str]]:
    """Pure merge: returns (merged, names added or replaced). Existing entries are kept in order."""
    conflicts = [n for n in new if n in existing and existing[n] != new[n]]
    if conflicts and not force:
        raise UserError(
            f"{where}: entr{'y' if len(conflicts) == 1 else 'ies'} {', '.join(conflicts)} already exist with "
            "different contents; rename ours or pass --force to replace them (a backup is kept)"
        )
    merged = dict(existing)
    changed = [n for n in new if existing.get(n) != new[n]]
    merged.update(new)
    return merged, changed


def merge_into(target: str | Path, entries: dict, force: bool = False) -> list[str]:
    """Merge `entries` into the dataset_info.json at `target`; return the names written."""
    target = Path(target)
    if target.is_dir():
        target = target / DATA_INFO
    existing = read_data_info(target)
    merged, changed = merge_entries(existing, entries, force, where=str(target))
    if not changed:
        return []
    if target.exists():
        backup = target.with_name(target.name + ".bak")
        with atomic_path(backup, failure=f"cannot back up {target}") as tmp:  # never half a backup
            shutil.copy2(target, tmp)
    atomic_write_json(target, merged)
    return changed
