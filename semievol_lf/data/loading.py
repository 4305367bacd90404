"""Load a task's labeled / unlabeled / test files (CSV as released, JSON or JSONL with the same fields).

Every problem is reported as `file:row: field: what is wrong` before any model is loaded.
Unlabeled files are read without their answer column (and FPB's `gt` label word), even when
they have one: the method must never see those answers.
A row may repeat an option text (the released MMLU and USMLE files do): letters are
positional, so the row is kept and its location reported, never rejected.
"""

import ast
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .extraction import LETTERS
from .tasks import Task

SPLITS = ("labeled", "unlabeled", "test")
SUFFIXES = (".csv", ".jsonl", ".json")
csv.field_size_limit(1 << 26)  # long contexts (ConvFinQA, PubMedQA) exceed the 128 KiB default


@dataclass
class Example:
    uid: str
    question: str
    options: list[str] = field(default_factory=list)
    answer: str | None = None  # canonical letter or number; always None for unlabeled rows
    category: str | None = None

    def to_dict(self) -> dict:
        row = {"id": self.uid, "question": self.question, "options": self.options}
        if self.category is not None:
            row["category"] = self.category
        if self.answer is not None:
            row["answer"] = self.answer
        return row


def split_file(folder: str | Path, split: str) -> Path | None:
    """`labeled.csv`, `labeled.jsonl` or `labeled.json` inside `folder`, or None."""
    return next((p for p in (Path(folder) / f"{split}{s}" for s in SUFFIXES) if p.is_file()), None)


def find_split_file(folder: str | Path, split: str) -> Path:
    path = split_file(folder, split)
    if path is None:
        raise UserError(f"{folder}: no {split}.csv, {split}.jsonl or {split}.json")
    return path


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) pairs; the line number is what an editor shows for that row."""
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
    """Read and validate one split. `split == "unlabeled"` drops any answer column unread.

    `repeated`, when given, collects the `file:line` of every row that repeats an option text.
    """
    path = Path(path)
    rows = _read_rows(path)
    if not rows:
        raise UserError(f"{path}: no rows")
    required = ["question"] + (["options"] if task.has_options else []) + (["answer"] if split != "unlabeled" else [])

    examples, seen = [], {}
    for line, row in rows:
        where = f"{path}:{line}"
        if not isinstance(row, dict):
            raise UserError(f"{where}: each row must be an object with named fields")
        # per row: JSON rows need not share the first row's keys; a CSV's columns are its header, line 1
        missing = [c for c in required if _column(row, c) is None]
        if missing:
            where = f"{path}:1" if path.suffix == ".csv" else where
            raise UserError(f"{where}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, row))}")
        if split == "unlabeled":  # answers may be present (the released files have them); never read them
            row = {k: v for k, v in row.items() if str(k).lower() not in ("answer", "gt")}
        question = str(row.get(_column(row, "question") or "question") or "").strip()
        if not question:
            raise UserError(f"{where}: question: empty")
        options = parse_options(row[_column(row, "options")], where) if task.has_options else []
        if task.has_options and len(options) > task.max_options:
            raise UserError(f"{where}: options: {len(options)} options, "
                            f"task {task.name} has at most {task.max_options}")
        if repeated is not None and len(set(options)) != len(options):
            repeated.append(where)
        answer = None
        if split != "unlabeled":
            raw = row[_column(row, "answer")]
            answer = task.normalise_answer(raw, len(options))
            if answer is None:
                allowed = f"a letter A-{LETTERS[len(options) - 1]}" if task.has_options else "a number"
                raise UserError(f"{where}: answer: {str(raw)[:40]!r} is not {allowed}")
        category = None
        if task.category_field and (col := _column(row, task.category_field)) is not None:
            category = str(row[col]).strip() or None
        uid = f"{split}-{len(examples)}"
        if (col := _column(row, task.id_field or "id")) is not None and str(row[col]).strip():
            uid = str(row[col]).strip()
        if uid in seen:
            raise UserError(f"{where}: {task.id_field or 'id'}: {uid!r} already used on row {seen[uid]}")
        seen[uid] = line
        examples.append(Example(uid, question, options, answer, category))
    return examples


def load_task_split(folder: str | Path, task: Task, split: str, repeated: list[str] | None = None) -> list[Example]:
    return load_examples(find_split_file(folder, split), task, split, repeated)
