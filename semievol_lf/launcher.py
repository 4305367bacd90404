"""LlamaFactory fine-tunes of a run: write the recipe, run `llamafactory-cli train` in a subprocess,
and skip a fine-tune whose marker says it already finished from the same recipe, data and model.

The marker (`semievol_step.json` in the output folder) is written only after LlamaFactory exits 0
and left its weights, so a killed or failed training is never taken for a finished one. A failure
stops the run with the command and the last lines of its log.
"""

import json
import subprocess
import sys
from pathlib import Path

import yaml

from .data_info import DATA_INFO
from .errors import UserError
from .io_utils import StepMarker, atomic_write_text, file_digest, fingerprint
from .progress import banner
from .step import model_identity


def llamafactory_cli() -> str:
    """The `llamafactory-cli` beside this Python (the venv's), else the one on PATH."""
    exe = Path(sys.executable).with_name("llamafactory-cli")
    return str(exe) if exe.is_file() else "llamafactory-cli"


def dataset_files(dataset_dir: Path, dataset: str) -> list[Path]:
    """The files of `dataset` ("a,b": names in dataset_dir's dataset_info.json)."""
    info = json.loads((dataset_dir / DATA_INFO).read_text())
    return [dataset_dir / info[d.strip()]["file_name"] for d in dataset.split(",")]


def train(name: str, recipe: dict, recipe_path: Path, log: Path) -> Path:
    """Run one fine-tune of `recipe` (a complete LlamaFactory recipe); return its output_dir."""
    output_dir = Path(recipe["output_dir"])
    key = fingerprint({"recipe": recipe, "data": [file_digest(f) for f in dataset_files(
        Path(recipe["dataset_dir"]), recipe["dataset"])], "model": model_identity(recipe["model_name_or_path"])})
    marker = StepMarker(output_dir / "semievol_step.json", {"key": key})
    if marker.done():
        print(f"{name}: finished before, skipped ({output_dir})")
        return output_dir
    banner(f"Train: {name}")
    atomic_write_text(recipe_path, yaml.safe_dump(recipe, sort_keys=False))
    cmd = [llamafactory_cli(), "train", str(recipe_path)]
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False)
    except OSError as err:
        raise UserError(f"cannot write {log}: {err.strerror}") from None
    trained = any((output_dir / f).is_file() for f in ("adapter_config.json", "model.safetensors"))
    if proc.returncode != 0 or not trained:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-5:])
        raise UserError(f"step {name} failed (exit {proc.returncode}).\n  command: {' '.join(cmd)}\n"
                        f"  log: {log}\n  last lines:\n{tail}")
    marker.write()
    print(f"{name}: trained model in {output_dir}")
    return output_dir
