"""Tasks are data: a YAML declaration beside a Jinja prompt. Adding a task needs no code.

    get_task("mmlu")                 -> templates/tasks/mmlu.yaml (a built-in task)
    get_task("my/tickets.yaml")      -> a user's task file, anywhere

The minimal file (the template gets `question`, `options` for letter tasks, `labels`, `category`):

    name: tickets
    prompt: tickets.jinja                        # relative to this file
    answer_type: label                           # letter | label | number
    labels: [billing, bug, feature, other]
    columns: {question: text, answer: label}     # also: options, id, category

Every problem is one UserError naming file, line and key, raised before any data or model loads.
What stays in Python is the answer types' extraction (`extraction.py`). Not handled: free-text
answers (a task must have answers that can be compared exactly: a letter, a label, a number).
"""

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import yaml

from ..errors import UserError, closest
from ..paths import templates_dir
from .extraction import (
    LETTERS,
    NO_ANSWER,
    REL_TOL,
    Extraction,
    extract_number,
    format_number,
    numbers_match,
    parse_value,
    read_label,
    read_letter,
)

ANSWER_TYPES = ("letter", "label", "number")
COLUMN_ROLES = ("question", "answer", "options", "id", "category")
KEYS = ("name", "prompt", "answer_type", "labels", "columns", "max_options", "tolerance", "splits", "description")
SPLIT_NAMES = ("labeled", "unlabeled", "test")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # it names datasets (`NAME_labeled`) and folders


@dataclass(frozen=True)
class Columns:
    """Which column of the data holds each field (LlamaFactory's dataset_info `columns`, read this way round)."""

    question: str = "question"
    answer: str = "answer"
    options: str = "options"
    id: str = "id"
    category: str | None = None


@dataclass(frozen=True)
class Task:
    name: str
    prompt: Path  # the Jinja file that renders one question
    answer_type: Literal["letter", "label", "number"] = "letter"
    labels: tuple[str, ...] = ()
    columns: Columns = field(default_factory=Columns)
    max_options: int = len(LETTERS)
    tolerance: float = REL_TOL  # number tasks: relative tolerance of a correct answer
    splits: tuple[tuple[str, str], ...] = ()  # hub datasets: (labeled|unlabeled|test, the dataset's split)
    path: Path | None = None  # the YAML file

    @property
    def has_options(self) -> bool:
        return self.answer_type == "letter"

    def target(self, answer: str) -> str:
        """The SFT response for a gold or pseudo answer: `target("C") == "Answer: C"`."""
        return f"Answer: {answer}"

    def extract(self, response: str, n_options: int | None = None, options: list[str] | None = None) -> str:
        """The answer of a response, or NO_ANSWER; `options` (the question's option texts) let a response
        that names an option's text instead of its letter be read, and a letter contradicted by it not."""
        return self.read(response, n_options, options).answer

    def read(self, response: str, n_options: int | None = None, options: list[str] | None = None) -> Extraction:
        """`extract` with the step that decided (`.ambiguous`: a letter and an option text that disagree)."""
        if self.answer_type == "number":
            answer = extract_number(response)
            return Extraction(answer, "none" if answer == NO_ANSWER else "number")
        if self.answer_type == "label":
            return read_label(response, self.labels)
        return read_letter(response, n_options or self.max_options, options)

    def is_correct(self, pred: str, gold: str) -> bool:
        if pred == NO_ANSWER:
            return False
        if self.answer_type == "number":
            return numbers_match(pred, gold, self.tolerance)
        return pred == gold

    def normalise_answer(self, raw: str, n_options: int) -> str | None:
        """Gold answer from a data file in canonical form, or None when it is not valid."""
        raw = str(raw).strip()
        if self.answer_type == "number":
            value = parse_value(raw)  # "12%" -> 0.12, as predictions are read
            return None if value is None else format_number(value)
        if self.answer_type == "label":
            return {label.lower(): label for label in self.labels}.get(raw.lower())
        letter = raw.rstrip(".").strip("() ").upper()
        return letter if len(letter) == 1 and letter in LETTERS[:n_options] else None

    def allowed_answers(self, n_options: int) -> str:
        """For messages: "a letter A-D", "one of billing, bug, feature, other", "a number"."""
        if self.answer_type == "letter":
            return f"a letter A-{LETTERS[n_options - 1]}"
        return f"one of {', '.join(self.labels)}" if self.answer_type == "label" else "a number"


def builtin_dir() -> Path:
    return templates_dir() / "tasks"


def builtin_tasks() -> list[str]:
    """The task files shipped in templates/tasks/, by name: arc, convfinqa, demo, fpb, mmlu, ..."""
    return sorted(p.stem for p in builtin_dir().glob("*.yaml"))


def is_task_file(spec: str) -> bool:
    """A path (`tickets.yaml`, `tasks/tickets`) rather than a built-in task's name."""
    return spec.endswith((".yaml", ".yml")) or "/" in spec or "\\" in spec


def get_task(spec: str) -> Task:
    """A built-in task by name, or a task file by path.

    `get_task("mmlu-pro")` -> "Unknown task 'mmlu-pro'. Did you mean: mmlu_pro? Available: ..."."""
    if is_task_file(str(spec)):
        return load_task(Path(spec).expanduser().resolve())
    known = builtin_tasks()
    if spec in known:
        return load_task((builtin_dir() / f"{spec}.yaml").resolve())
    near = closest(spec, known)
    hint = f" Did you mean: {near}?" if near else ""
    raise UserError(f"Unknown task {spec!r}.{hint} Available: {', '.join(known)}, or a task file (path/to/task.yaml)")


@cache
def load_task(path: Path) -> Task:
    """Read and check one task file (cached: a file is read once per process)."""
    values, lines = _read_yaml(path)
    at = lambda key: f"{path}:{lines.get(key) or lines.get(key.split('.')[0], 1)}"  # noqa: E731
    for key in values:
        if key not in KEYS:
            near = closest(key, KEYS)
            raise UserError(f"{at(key)}: unknown key `{key}`" + (f"; did you mean `{near}`?" if near else "")
                            + f" (known: {', '.join(KEYS)})")
    for key in ("name", "prompt"):
        if not isinstance(values.get(key), str) or not values[key].strip():
            raise UserError(f"{at(key)}: `{key}` is required (a string)")
    name = values["name"].strip()
    if not _NAME.match(name):
        raise UserError(f"{at('name')}: `name`: {name!r} must be letters, digits, `_`, `.` or `-` "
                        "(it names the datasets and folders of the task)")

    answer_type = values.get("answer_type", "letter")
    if answer_type not in ANSWER_TYPES:
        why = (" Free-text answers are out of scope: SemiEvol compares the collaborators' answers and scores "
               "accuracy exactly, so a task needs a letter, a label or a number."
               if str(answer_type).lower() in ("text", "free", "free_text", "freetext", "string", "generation")
               else "")
        raise UserError(f"{at('answer_type')}: `answer_type`: {answer_type!r} is not one of "
                        f"{', '.join(ANSWER_TYPES)}.{why}")
    labels = _labels(values, answer_type, at)
    columns = _columns(values.get("columns", {}), answer_type, at)
    max_options = values.get("max_options", len(LETTERS))
    if answer_type != "letter" and "max_options" in values:
        raise UserError(f"{at('max_options')}: `max_options` is for letter tasks only")
    if not isinstance(max_options, int) or isinstance(max_options, bool) or not 2 <= max_options <= len(LETTERS):
        raise UserError(f"{at('max_options')}: `max_options` must be an integer from 2 to {len(LETTERS)}")
    tolerance = values.get("tolerance", REL_TOL)
    if answer_type != "number" and "tolerance" in values:
        raise UserError(f"{at('tolerance')}: `tolerance` is for number tasks only")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise UserError(f"{at('tolerance')}: `tolerance` must be a relative error in [0, 1), e.g. 0.01")

    prompt = (path.parent / values["prompt"]).resolve()
    check_prompt(prompt, at("prompt"))
    return Task(name, prompt, answer_type, labels, columns, max_options, float(tolerance),
                _splits(values.get("splits"), at), path)


def _labels(values: dict, answer_type: str, at) -> tuple[str, ...]:
    raw = values.get("labels")
    if answer_type != "label":
        if raw is not None:
            raise UserError(f"{at('labels')}: `labels` is for `answer_type: label` tasks (this one is {answer_type})")
        return ()
    if raw is None:
        raise UserError(f"{at('answer_type')}: `answer_type: label` needs `labels`, the list of answer words, "
                        "e.g. labels: [billing, bug, feature, other]")
    if not isinstance(raw, list) or len(raw) < 2 or not all(isinstance(x, (str, int)) for x in raw):
        raise UserError(f"{at('labels')}: `labels` must be a list of at least two words")
    labels = tuple(str(x).strip() for x in raw)
    if any(not label for label in labels):
        raise UserError(f"{at('labels')}: `labels`: a label is empty")
    seen: dict[str, str] = {}
    for label in labels:
        if label.lower() in seen:
            raise UserError(f"{at('labels')}: `labels`: {label!r} is listed twice"
                            + (f" (as {seen[label.lower()]!r})" if seen[label.lower()] != label else "")
                            + "; labels are read case-insensitively")
        seen[label.lower()] = label
    return labels


def _columns(raw, answer_type: str, at) -> Columns:
    if not isinstance(raw, dict):
        raise UserError(f"{at('columns')}: `columns` must be a mapping, e.g. {{question: text, answer: label}}")
    for role, column in raw.items():
        where = at(f"columns.{role}")
        if role not in COLUMN_ROLES:
            near = closest(str(role), COLUMN_ROLES)
            raise UserError(f"{where}: unknown key `columns.{role}`" + (f"; did you mean `{near}`?" if near else "")
                            + f" (known: {', '.join(COLUMN_ROLES)})")
        if not isinstance(column, str) or not column.strip():
            raise UserError(f"{where}: `columns.{role}` must name a column of the data")
    if "options" in raw and answer_type != "letter":
        raise UserError(f"{at('columns.options')}: `columns.options` is for letter tasks ({answer_type} answers "
                        "have no options)")
    return Columns(**{k: v.strip() for k, v in raw.items()})


def _splits(raw, at) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{at('splits')}: `splits` must map labeled / unlabeled / test to the dataset's splits, "
                        "e.g. {labeled: 'train[:64]', unlabeled: 'train[64:]', test: test}")
    for key, value in raw.items():
        if key not in SPLIT_NAMES:
            near = closest(str(key), SPLIT_NAMES)
            raise UserError(f"{at('splits')}: unknown key `splits.{key}`"
                            + (f"; did you mean `{near}`?" if near else ""))
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{at('splits')}: `splits.{key}` must name a split, e.g. train or 'train[:64]'")
    for key in ("labeled", "test"):
        if key not in raw:
            raise UserError(f"{at('splits')}: `splits.{key}` is required")
    return tuple((k, str(raw[k]).strip()) for k in SPLIT_NAMES if k in raw)


def _read_text(path: Path, missing: str, unreadable: str) -> str:
    """The file's UTF-8 text, or one UserError: `missing`, or `unreadable (why)`."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(missing) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{unreadable} ({getattr(err, 'strerror', None) or err})") from None


def check_prompt(prompt: Path, where: str) -> None:
    """The prompt file exists, is readable and parses as Jinja (with the line of a syntax error)."""
    import jinja2

    source = _read_text(prompt, f"{where}: `prompt`: {prompt} not found (a path relative to the task file)",
                        f"{where}: `prompt`: cannot read {prompt}")
    try:
        jinja2.Environment().parse(source)  # syntax only: includes resolve when it renders
    except jinja2.TemplateSyntaxError as err:
        raise UserError(f"{prompt}:{err.lineno}: Jinja syntax error: {err.message}") from None


def _read_yaml(path: Path) -> tuple[dict, dict[str, int]]:
    """(values, key -> line), with nested mapping keys as `columns.question`."""
    text = _read_text(path, f"{path}: task file not found", f"{path}: cannot read the task file")
    try:
        node, values = yaml.compose(text), yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: a task file is a mapping of `key: value` lines (name, prompt, answer_type, ...)")
    lines = {}
    for key, value in node.value:
        lines[str(key.value)] = key.start_mark.line + 1
        if isinstance(value, yaml.MappingNode):
            for sub, _ in value.value:
                lines[f"{key.value}.{sub.value}"] = sub.start_mark.line + 1
    return {str(k): v for k, v in values.items()}, lines
