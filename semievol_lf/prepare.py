"""Validate a task's three files and write them as LlamaFactory datasets.

    python -m semievol_lf.prepare --task mmlu --source SemiEvol/mmlu --out data/mmlu

Writes `labeled.json`, `unlabeled.json` and `test.json` (alpaca rows plus the canonical
fields id/question/options/category/answer) and a `dataset_info.json` with their entries.
The unlabeled file never carries an answer, even when the source has one.
"""

import argparse
from pathlib import Path

from .data import SPLITS, Example, load_task_split
from .data_info import DATA_INFO, split_entries
from .errors import UserError, exit_on_user_error
from .io_utils import atomic_write_files, json_text
from .prompts import task_prompt
from .tasks import Task, get_task


def to_alpaca(task: Task, example: Example, output: str | None = None) -> dict:
    """One LlamaFactory alpaca row; `output` defaults to the gold SFT target ("Answer: C")."""
    if output is None and example.answer is not None:
        output = task.target(example.answer)
    return {"instruction": task_prompt(task, example), "input": "", "output": output or "", **example.to_dict()}


def load_splits(task: Task, source: str | Path) -> dict[str, list[Example]]:
    """Load and validate all three splits before anything is written."""
    splits = {split: load_task_split(source, task, split) for split in SPLITS}
    if not splits["labeled"]:
        raise UserError(f"{source}: the labeled set is empty")
    return splits


def prepare(task_name: str, source: str | Path, out: str | Path) -> dict[str, int]:
    task = get_task(task_name)
    splits = load_splits(task, source)
    out = Path(out)
    files = {out / f"{split}.json": json_text([to_alpaca(task, e) for e in examples])
             for split, examples in splits.items()}
    files[out / DATA_INFO] = json_text(split_entries(task.name, out, out, splits=SPLITS))
    atomic_write_files(files)  # all or nothing: never a new labeled.json beside an old unlabeled.json
    return {split: len(rows) for split, rows in splits.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m semievol_lf.prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True, help="task name, e.g. mmlu, mmlu_pro, convfinqa, demo")
    parser.add_argument("--source", required=True, help="folder with labeled/unlabeled/test .csv, .jsonl or .json")
    parser.add_argument("--out", required=True, help="output folder, e.g. data/mmlu (what data_info/ points at)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        counts = prepare(args.task, args.source, args.out)
    print(f"prepared {args.task}: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f" -> {args.out}")


if __name__ == "__main__":
    main()
