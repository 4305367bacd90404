"""A small, seeded slice of a released task folder, in the same layout (for CPU runs of a real model).

    python -m semievol_lf.data.slices --source ../shared/semievol-data/fpb --out runs/demo-real/source \
        --sizes labeled=24 unlabeled=16 test=all [--seed 0]

Each split's CSV keeps its header and columns; a seeded sample of its rows is written in file
order (`all`: every row, as released). `semievol-lf run ... source=OUT` prepares the slice like the
full folder.
"""

import argparse
import csv
import io
import random
from pathlib import Path

from ..errors import UserError, exit_on_user_error
from ..io_utils import atomic_write_files
from .loading import SPLITS


def sample_rows(rows: list, n: int | None, seed: int) -> list:
    """`n` rows drawn without replacement by `seed`, in their original order (all when n is None or >= len)."""
    if n is None:
        return list(rows)
    keep = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    return [rows[i] for i in keep]


def write_slice(source: str | Path, out: str | Path, sizes: dict[str, int | None], seed: int = 0) -> dict[str, int]:
    """Write `out/<split>.csv` for each split in `sizes` (a size of None: every row of the split); return the
    row counts written."""
    source, out = Path(source), Path(out)
    texts, counts = {}, {}
    for split, n in sizes.items():
        path = source / f"{split}.csv"
        if not path.is_file():
            raise UserError(f"`source`: {path} does not exist (a slice is made from the released CSV files)")
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], list(reader)
        picked = sample_rows(rows, n, seed)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(picked)
        texts[out / f"{split}.csv"] = buf.getvalue()
        counts[split] = len(picked)
    atomic_write_files(texts)
    return counts


def parse_sizes(items: list[str]) -> dict[str, int | None]:
    """["labeled=24", "test=all"] -> {"labeled": 24, "test": None} (None: every row)"""
    sizes = {}
    for item in items:
        split, _, n = item.partition("=")
        if split not in SPLITS or not (n == "all" or n.isdigit() and int(n) >= 1):
            raise UserError(f"`--sizes`: {item!r} is not SPLIT=N with SPLIT one of {', '.join(SPLITS)} and N >= 1 "
                            "or `all`")
        sizes[split] = None if n == "all" else int(n)
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m semievol_lf.data.slices", description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="released task folder (labeled/unlabeled/test.csv)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--sizes", nargs="+", required=True, help="SPLIT=N (or SPLIT=all) for each split to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with exit_on_user_error():
        counts = write_slice(args.source, args.out, parse_sizes(args.sizes), args.seed)
    print(f"slice of {args.source}: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f" -> {args.out}")


if __name__ == "__main__":
    main()
