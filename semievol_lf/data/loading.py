"""Load a task's labeled / unlabeled / test data: CSV (as released), JSON, JSONL or Parquet files, or the
splits of a Hugging Face dataset; the task's `columns` say which column holds which field.

Every problem is reported as `file:line: field: what is wrong` before any model is loaded.
Text files (CSV, JSON, JSONL) are read here, so that the line is the one an editor shows and
every value stays the string in the file (`datasets`' CSV reader goes through pandas, which
has neither line numbers nor strings only: "007" would become 7). Parquet files and hub
datasets are read through `datasets`; their rows are located as `row N`.
Only the task's columns are read: an unlabeled file's answer column, even when it has one,
is dropped unread (the method must never see those answers).
A row may repeat an option text (the released MMLU and USMLE files do): letters are
positional, so the row is kept and its location reported, never rejected.
"""

import ast
import csv
import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import UserError
from .extraction import LETTERS
from .tasks import Columns, Task

SPLITS = ("labeled", "unlabeled", "test")
PREPARED_COLUMNS = Columns(category="category")  # the fields of `Example.to_dict`
SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
csv.field_size_limit(1 << 26)  # long contexts (ConvFinQA, PubMedQA) exceed the 128 KiB default


@dataclass
class Example:
    uid: str
    question: str
    options: list[str] = field(default_factory=list)
    answer: str | None = None  # canonical letter, label or number; always None for unlabeled rows
    category: str | None = None

    def to_dict(self) -> dict:
        row = {"id": self.uid, "question": self.question, "options": self.options}
        if self.category is not None:
            row["category"] = self.category
        if self.answer is not None:
            row["answer"] = self.answer
        return row


def split_file(folder: str | Path, split: str) -> Path | None:
    """`labeled.csv`, `labeled.jsonl`, `labeled.json` or `labeled.parquet` inside `folder`, or None."""
    return next((p for p in (Path(folder) / f"{split}{s}" for s in SUFFIXES) if p.is_file()), None)


def find_split_file(folder: str | Path, split: str) -> Path:
    path = split_file(folder, split)
    if path is None:
        raise UserError(f"{folder}: no {split}.csv, {split}.jsonl, {split}.json or {split}.parquet")
    return path


def _read_rows(path: Path) -> list[tuple[int | str, dict]]:
    """(line number, row) pairs; the line number is what an editor shows for that row."""
    if path.suffix == ".parquet":
        return read_dataset_rows("parquet", str(path), data_files=str(path))
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")  # -sig: Excel's BOM is not part of the first header
    except UnicodeDecodeError as err:
        start = err.start + len(raw) - len(err.object)  # utf-8-sig counts from after the BOM
        line = raw[:start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {start}); re-save the file as UTF-8") from None
    if not text.strip():
        raise UserError(f"{path}: file is empty")
    if path.suffix == ".csv":
        # newline="": only \n and \r end a row; str.splitlines also splits on \f, \x1c, \u2028 ... inside a field
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows, start = [], 2
        try:
            header = reader.fieldnames or []  # checked before the rows: a `;` file fails on its commas first
            if not any(h.strip() for h in header):
                raise UserError(f"{path}:1: the first line must name the columns (it is blank)")
            if len(header) == 1 and any(c in header[0] for c in ";\t|"):
                raise UserError(f"{path}:1: only one column `{header[0][:60]}`: the file must be comma-separated")
            for row in reader:
                extra, short = row.pop(None, []), [k for k, v in row.items() if v is None]
                if extra or short:
                    what = f"{short[0]}: missing" if short else f"{header[-1]}: {len(extra)} extra value(s) after it"
                    raise UserError(f"{path}:{start}: {what}; the row has {len(header) - len(short) + len(extra)} "
                                    f"fields, the header {len(header)} (a stray comma, quote or a truncated file?)")
                rows.append((start, row))
                start = reader.line_num + 1
        except csv.Error as err:
            raise UserError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None
        return rows
    if path.suffix == ".jsonl":
        rows = []
        # split on \n only: json.dumps(ensure_ascii=False) leaves U+2028 raw inside strings
        for n, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                try:
                    rows.append((n, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise UserError(f"{path}:{n}: not valid JSON ({err.msg})") from None
                except (ValueError, RecursionError) as err:  # 5,000-digit numbers, 1,000-deep nesting
                    raise UserError(f"{path}:{n}: not valid JSON ({str(err)[:80]})") from None
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    except (ValueError, RecursionError) as err:
        raise UserError(f"{path}: not valid JSON ({str(err)[:80]})") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: a JSON data file must hold a list of objects")
    return list(zip(_item_lines(text, len(data)), data))


def _item_lines(text: str, n: int) -> list[int]:
    """Line on which each of the `n` items of a valid top-level JSON list starts (for messages)."""
    decoder, lines = json.JSONDecoder(), []
    pos, line = text.index("[") + 1, 1 + text.count("\n", 0, text.index("["))
    for _ in range(n):
        start = pos
        while text[pos] in " \t\r\n,":
            pos += 1
        line += text.count("\n", start, pos)
        lines.append(line)
        _, end = decoder.raw_decode(text, pos)
        line, pos = line + text.count("\n", pos, end), end
    return lines


def parse_options(raw, where: str) -> list[str]:
    """`'["up", "down"]'` -> `["up", "down"]`; also accepts a Python list literal and a real list."""
    if isinstance(raw, list):
        options = raw
    else:
        text = str(raw).strip()
        try:
            options = json.loads(text)
        except (ValueError, RecursionError):
            try:
                options = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # all literal_eval raises
                raise UserError(f"{where}: options: not a JSON list: {text[:60]!r}") from None
    if not isinstance(options, list):
        raise UserError(f"{where}: options: expected a JSON list, got {type(options).__name__}")
    options = [str(o).strip() for o in options]
    if len(options) < 2:
        raise UserError(f"{where}: options: needs at least 2 options, got {len(options)}")
    if len(options) > len(LETTERS):
        raise UserError(f"{where}: options: {len(options)} options, at most {len(LETTERS)} (A-J) are supported")
    if any(not o for o in options):
        raise UserError(f"{where}: options: option {LETTERS[options.index('')]} is empty")
    return options  # a repeated text stays: letters are positional (load_examples reports the row)


def _column(row: dict, name: str) -> str | None:
    """Exact column name first, then case-insensitive (`subject` for `Subject`)."""
    if name in row:
        return name
    lowered = {k.lower(): k for k in row if isinstance(k, str)}
    return lowered.get(name.lower())


def load_examples(path: str | Path, task: Task, split: str, repeated: list[str] | None = None) -> list[Example]:
    """Read and validate one split file. `split == "unlabeled"` drops any answer column unread.

    `repeated`, when given, collects the `file:line` of every row that repeats an option text.
    """
    path = Path(path)
    return examples_from_rows(_read_rows(path), str(path), task, split, repeated,
                              header_line=1 if path.suffix == ".csv" else None)


def read_dataset_rows(name: str, where: str, **kwargs) -> list[tuple[str, dict]]:
    """Rows of `datasets.load_dataset(name, **kwargs)` (one split) as ("row N", row) pairs."""
    try:
        import datasets
    except ImportError:
        raise UserError(f"{where}: Parquet files and hub datasets are read with `datasets` "
                        "(pip install datasets)") from None
    datasets.disable_progress_bars()
    try:
        data = datasets.load_dataset(name, split=kwargs.pop("split", "train"), **kwargs)
    except Exception as err:  # noqa: BLE001 - the library boundary: a bad file, split name or hub id
        raise UserError(f"{where}: cannot read ({type(err).__name__}: "
                        f"{(str(err).strip().splitlines() or [''])[0][:200]})") from None
    return [(f"row {i}", row) for i, row in enumerate(data, start=1)]


def examples_from_rows(rows: list[tuple[int | str, dict]], source: str, task: Task, split: str,
                       repeated: list[str] | None = None, header_line: int | None = None) -> list[Example]:
    """Validate (location, row) pairs into Examples; `header_line`: where a CSV names its columns."""
    if not rows:
        raise UserError(f"{source}: no rows")
    cols = task.columns
    roles = [("question", cols.question)] + ([("options", cols.options)] if task.has_options else []) \
        + ([("answer", cols.answer)] if split != "unlabeled" else [])

    examples, seen = [], {}
    for line, row in rows:
        where = f"{source}:{line}"
        if not isinstance(row, dict):
            raise UserError(f"{where}: each row must be an object with named fields")
        # per row: JSON rows need not share the first row's keys; a CSV's columns are its header, line 1
        missing = [(role, c) for role, c in roles if _column(row, c) is None]
        if missing:
            where = f"{source}:{header_line}" if header_line else where
            named = ", ".join(c if c == role else f"{c} (`columns.{role}` of {task.path.name})"
                              for role, c in missing)
            raise UserError(f"{where}: missing column(s) {named}; found {', '.join(map(str, row))}")
        if split == "unlabeled":  # answers may be present (the released files have them); never read them
            row = {k: v for k, v in row.items() if k != _column(row, cols.answer)}
        question = str(row.get(_column(row, cols.question)) or "").strip()
        if not question:
            raise UserError(f"{where}: {cols.question}: empty")
        options = parse_options(row[_column(row, cols.options)], where) if task.has_options else []
        if task.has_options and len(options) > task.max_options:
            raise UserError(f"{where}: options: {len(options)} options, "
                            f"task {task.name} has at most {task.max_options}")
        if repeated is not None and len(set(options)) != len(options):
            repeated.append(where)
        answer = None
        if split != "unlabeled":
            raw = row[_column(row, cols.answer)]
            answer = task.normalise_answer(raw, len(options))
            if answer is None:
                raise UserError(f"{where}: {cols.answer}: {str(raw)[:40]!r} is not "
                                f"{task.allowed_answers(len(options))}")
        category = None
        if cols.category and (col := _column(row, cols.category)) is not None:
            category = str(row[col]).strip() or None
        uid = f"{split}-{len(examples)}"
        if (col := _column(row, cols.id)) is not None and str(row[col]).strip():
            uid = str(row[col]).strip()
        if uid in seen:
            raise UserError(f"{where}: {cols.id}: {uid!r} already used on row {seen[uid]}")
        seen[uid] = line
        examples.append(Example(uid, question, options, answer, category))
    return examples


def load_prepared_split(folder: str | Path, task: Task, split: str) -> list[Example]:
    """One split of a folder that `prepare` wrote: its rows carry the canonical fields (`Example.to_dict`),
    whatever columns the task's own files use."""
    return load_examples(find_split_file(folder, split), replace(task, columns=PREPARED_COLUMNS), split)
