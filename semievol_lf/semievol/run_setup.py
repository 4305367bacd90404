"""What a run needs before its first fine-tune: the model (a preset's local model is built on first
use) and the prepared data folder (the demo task's files are generated for `source: generated`).
Both are skipped when already made from the same inputs."""

from pathlib import Path

from ..errors import UserError
from ..io_utils import StepMarker, file_digest, fingerprint
from ..models.presets import ModelPreset
from ..progress import banner
from .layout import RunLayout


def ensure_model(preset: ModelPreset, model: str, explicit: bool) -> str:
    """The model path to train and serve; a preset's local model (`build`) is built here when missing."""
    if not preset.build:
        return model
    if not explicit:
        from ..models.build import build_preset_model

        build_preset_model(preset, model)
    return str(Path(model).resolve())


def prepare_data(task: str, source: str, layout: RunLayout, data_seed: int = 0,
                 data_sizes: dict | None = None) -> Path:
    """Prepare `source` (a folder of task files, or `generated`) into the run's data folder."""
    from ..data.prepare import prepare
    from ..data.sources import resolve_source

    original = source
    if source == "generated":
        from ..data.demo import DemoSpec, write_demo_data

        if task != "demo":
            raise UserError("`source: generated` makes demo data; set `task: demo` or point `source` at files")
        if not (layout.source / "test.csv").is_file():
            write_demo_data(layout.source, DemoSpec(seed=data_seed, **(data_sizes or {})))
        source = str(layout.source)
    source = resolve_source(source, task)  # a missing folder or hub: one line saying where the data is
    files = sorted(file_digest(p) for p in Path(source).iterdir() if p.is_file())
    marker = StepMarker(layout.data / "prepared.json", {"key": fingerprint({"task": task, "files": files})})
    if not marker.done():
        banner("Prepare data")
        for line in prepare(task, source, layout.data).notes():  # repeated options, a missing split
            print(line)
        marker.write()
    if not (layout.data / "unlabeled.json").is_file():
        raise UserError(f"{original}: no unlabeled split, and SemiEvol pseudo-labels the unlabeled set; "
                        "add an unlabeled.csv (.jsonl, .json) to the source folder")
    return layout.data
