"""The task registry: each task is a small declaration, adding one needs no new code.

A task says where its fields come from (the released CSV columns; JSON and JSONL files
with the same fields load the same way), which Jinja prompt renders a question, the
answer type and therefore the extraction, and the one SFT target format used everywhere.
"""

from dataclasses import dataclass, field
from typing import Literal

from ..errors import UserError, closest
from .extraction import (
    LETTERS,
    NO_ANSWER,
    Extraction,
    extract_number,
    format_number,
    numbers_match,
    parse_value,
    read_letter,
)


@dataclass(frozen=True)
class Task:
    name: str
    prompt: str = field(metadata={"help": "Jinja file in semievol_lf/templates/ that renders one question."})
    answer_type: Literal["letter", "number"] = "letter"
    category_field: str | None = field(default=None, metadata={"help": "Column used for per-category accuracy."})
    id_field: str | None = field(default=None, metadata={"help": "Column with a stable row id, if the data has one."})
    max_options: int = 10

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
        return read_letter(response, n_options or self.max_options, options)

    def is_correct(self, pred: str, gold: str) -> bool:
        if pred == NO_ANSWER:
            return False
        if self.answer_type == "number":
            return numbers_match(pred, gold)
        return pred == gold

    def normalise_answer(self, raw: str, n_options: int) -> str | None:
        """Gold answer from a data file in canonical form, or None when it is not valid."""
        raw = str(raw).strip()
        if self.answer_type == "number":
            value = parse_value(raw)  # "12%" -> 0.12, as predictions are read
            return None if value is None else format_number(value)
        letter = raw.rstrip(".").strip("() ").upper()
        return letter if len(letter) == 1 and letter in LETTERS[:n_options] else None


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("mmlu", "mmlu.jinja", category_field="Subject", max_options=4),  # 57 subjects, 4 options
        Task("mmlu_pro", "mmlu_pro.jinja", category_field="category", id_field="question_id"),  # 14 categories
        Task("arc", "arc.jinja"),  # ARC-Challenge grade-school science
        Task("fpb", "fpb.jinja"),  # Financial PhraseBank sentiment
        Task("usmle", "usmle.jinja"),  # USMLE (MedQA) medical licensing questions
        Task("pubmedqa", "pubmedqa.jinja"),  # yes/no/maybe
        # numeric reasoning over financial reports: correct within a relative REL_TOL, a % means /100
        Task("convfinqa", "convfinqa.jinja", answer_type="number"),
        Task("demo", "demo.jinja", max_options=3),  # generated three-way sentiment over invented words
    ]
}


def get_task(name: str) -> Task:
    """`get_task("mmlu-pro")` -> "Unknown task 'mmlu-pro'. Did you mean: mmlu_pro? Available: ..."."""
    if name in TASKS:
        return TASKS[name]
    near = closest(name, TASKS)
    hint = f" Did you mean: {near}?" if near else ""
    raise UserError(f"Unknown task {name!r}.{hint} Available: {', '.join(TASKS)}")
