"""What a run needs before its first fine-tune: the model (the tiny demo model is built on first
use) and the prepared data folder (the demo task's files are generated for `source: generated`).
Both are skipped when already made from the same inputs."""

from pathlib import Path

from .errors import UserError
from .io_utils import StepMarker, file_digest, fingerprint
from .progress import banner
from .run_layout import RunLayout


def ensure_model(preset_name: str, model: str, explicit: bool) -> str:
    """The model path to train and serve; the `tiny` preset's model is built here when missing."""
    if preset_name != "tiny":
        return model
    if not explicit and not Path(model).is_dir():
        from .demo_model import build_model

        banner(f"Build the tiny demo model ({model})")
        build_model(model, seed=0)
    return str(Path(model).resolve())


def prepare_data(task: str, source: str, layout: RunLayout, data_seed: int = 0,
                 data_sizes: dict | None = None) -> Path:
    """Prepare `source` (a folder of task files, or `generated`) into the run's data folder."""
    from .prepare import prepare
    from .sources import resolve_source

    original = source
    if source == "generated":
        from .demo_data import DemoSpec, write_demo_data

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
