"""Validate a task's files and write them as LlamaFactory datasets.

    python -m semievol_lf.prepare --task mmlu --source hf://luojunyu/SemiEvol/mmlu --out data/mmlu
    python -m semievol_lf.prepare --task mmlu --source SemiEvol/mmlu --out data/mmlu

Writes `labeled.json`, `unlabeled.json` and `test.json` (alpaca rows plus the canonical
fields id/question/options/category/answer) and a `dataset_info.json` with their entries.
The unlabeled file never carries an answer, even when the source has one. A source without
an unlabeled file (the released mmlu_pro and usmle) is prepared without one, and says so.
Rows that repeat an option text are kept (letters are positional) and counted.
"""

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError, exit_on_user_error
from ..io_utils import atomic_write_files, json_text
from ..llamafactory.dataset_info import DATA_INFO, split_entries
from .loading import SPLITS, Example, examples_from_rows, load_examples, read_dataset_rows, split_file
from .prompts import task_prompt
from .sources import HF_PREFIX, resolve_source
from .tasks import Task, get_task

OPTIONAL_SPLITS = ("unlabeled",)  # labeled and test are needed even to train and score a baseline
SHOW_LOCATIONS = 3  # repeated-option rows named in the summary (all are counted)


@dataclass
class Prepared:
    """What `prepare` wrote: rows per split, the splits the source lacks, the rows that repeat an option."""

    task: str
    source: Path
    out: Path
    counts: dict[str, int]  # split -> rows written, in SPLITS order
    missing: list[str] = field(default_factory=list)  # optional splits without a file in the source
    repeated: list[str] = field(default_factory=list)  # "path:line" of every row repeating an option text

    def summary(self) -> str:
        """`prepared mmlu_pro: 2406 labeled, unlabeled missing, 2407 test -> data/mmlu_pro`."""
        parts = [f"{self.counts[s]} {s}" if s in self.counts else f"{s} missing" for s in SPLITS]
        return f"prepared {self.task}: {', '.join(parts)} -> {self.out}"

    def notes(self) -> list[str]:
        """Lines a user should read: a missing unlabeled split, rows with a repeated option text."""
        lines = []
        for split in self.missing:
            lines.append(f"warning: {self.source} has no {split} split (no {split}.csv, {split}.jsonl or "
                         f"{split}.json): wrote labeled and test only; pseudolabel and `semievol-lf run` need one "
                         "(the released mmlu_pro and usmle come without one)")
        if self.repeated:
            # "mmlu/labeled.csv:1084": relative to the source's parent, which also names the task folder
            shown = ", ".join(os.path.relpath(w, self.source.parent) for w in self.repeated[:SHOW_LOCATIONS])
            more = f" and {len(self.repeated) - SHOW_LOCATIONS} more" if len(self.repeated) > SHOW_LOCATIONS else ""
            lines.append(f"note: {len(self.repeated)} row(s) repeat an option text, kept (letters are positional): "
                         f"{shown}{more}")
        return lines


def to_alpaca(task: Task, example: Example, output: str | None = None) -> dict:
    """One LlamaFactory alpaca row; `output` defaults to the gold SFT target ("Answer: C")."""
    if output is None and example.answer is not None:
        output = task.target(example.answer)
    return {"instruction": task_prompt(task, example), "input": "", "output": output or "", **example.to_dict()}


def load_splits(task: Task, source: str | Path, repeated: list[str] | None = None) -> dict[str, list[Example]]:
    """Load and validate every split before anything is written; only OPTIONAL_SPLITS may be absent.
    A task with `splits` reads them from the dataset `source` (a hub id or a local dataset folder)."""
    splits = {}
    if task.splits:
        for split, spec in task.splits:
            name = str(source).removeprefix(HF_PREFIX)
            rows = read_dataset_rows(name, f"{source}[{spec}]", split=spec)
            splits[split] = examples_from_rows(rows, f"{source}[{spec}]", task, split, repeated)
    else:
        for split in SPLITS:
            path = split_file(source, split)
            if path is None and split in OPTIONAL_SPLITS:
                continue
            if path is None:
                raise UserError(f"{source}: no {split}.csv, {split}.jsonl, {split}.json or {split}.parquet")
            splits[split] = load_examples(path, task, split, repeated)
    if not splits["labeled"]:
        raise UserError(f"{source}: the labeled set is empty")
    return splits


def prepare(task_name: str, source: str | Path, out: str | Path) -> Prepared:
    """`task_name`: a built-in task or a task file's path."""
    task = get_task(task_name)
    source = source if task.splits else resolve_source(source, task.name)
    repeated: list[str] = []
    splits = load_splits(task, source, repeated)
    out = Path(out)
    files = {out / f"{split}.json": json_text([to_alpaca(task, e) for e in examples])
             for split, examples in splits.items()}
    files[out / DATA_INFO] = json_text(split_entries(task.name, out, out, splits=tuple(splits)))
    atomic_write_files(files)  # all or nothing: never a new labeled.json beside an old unlabeled.json
    missing = [s for s in SPLITS if s not in splits]
    for split in missing:  # an earlier prepare's file would be read as this source's
        (out / f"{split}.json").unlink(missing_ok=True)
    return Prepared(task.name, Path(source), out, {s: len(rows) for s, rows in splits.items()}, missing, repeated)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m semievol_lf.prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True, help="a built-in task (mmlu, mmlu_pro, arc, fpb, usmle, pubmedqa, "
                                                      "convfinqa, demo) or the path of a task file (README, "
                                                      "'Your own task')")
    parser.add_argument("--source", required=True, help="folder with labeled/unlabeled/test .csv, .jsonl or .json, "
                                                        "or hf://luojunyu/SemiEvol/<task> (the released data)")
    parser.add_argument("--out", required=True, help="output folder, e.g. data/mmlu (what data_info/ points at)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        prepared = prepare(args.task, args.source, args.out)
    print(prepared.summary())
    for line in prepared.notes():
        print(line, file=sys.stderr if line.startswith("warning:") else sys.stdout)


if __name__ == "__main__":
    main()
