"""Answer extraction from free-form model responses, as small named steps.

Every extractor returns a canonical answer (a letter "A".."J", or a number written by
`format_number`) or `NO_ANSWER`; it never raises and never returns an empty label.

    >>> extract_letter("The answer is (c).", n_options=4)
    'C'
    >>> extract_number("Answer: -1,234.5%")
    '-1234.5'

Not handled on purpose: answers given as the option's text instead of its letter, and
numbers written in words ("twelve").
"""

import math
import re

NO_ANSWER = "[no answer]"
LETTERS = "ABCDEFGHIJ"

# A letter counts only where a model states an answer, and never as the start of a word.
_LETTER = r"\(?\s*([A-Ja-j])(?![A-Za-z0-9])\s*\)?"
_LETTER_STEPS: list[tuple[str, re.Pattern]] = [
    ("answer_is", re.compile(r"answer\s*(?:is|:|=|-)?\s*(?:option\s*)?" + _LETTER, re.IGNORECASE)),
    ("option_is", re.compile(r"(?:option|choice)\s*(?:is\s*)?:?\s*" + _LETTER, re.IGNORECASE)),
    ("leading", re.compile(r"^\s*\(?([A-Ja-j])(?:\)|\.|:|$|\s*\)|\s+-)", re.IGNORECASE)),
    ("parenthesised", re.compile(r"\(([A-J])\)")),
]

_NUMBER_STRICT = re.compile(
    r"(?P<neg>\()?\s*(?P<sign>[-+\u2212])?\s*\$?(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?P<exp>[eE][-+]?\d+)?(?P<close>\))?\s*(?P<pct>%)?"
)
_ANSWER_NUMBER = re.compile(r"answer\s*(?:is|:|=)?\s*:?\s*", re.IGNORECASE)


def _squeeze(text: str) -> str:
    """Strip and turn every whitespace run into one space: the optional `\\s*` pieces of the patterns
    backtrack cubically on long runs (3,000 blanks took minutes), and stuck models emit pages of them."""
    return " ".join(text.split())


def _letters(pattern: re.Pattern, text: str, n_options: int) -> list[str]:
    out = []
    for m in pattern.finditer(text):
        letter = m.group(1)
        # "the answer is a bit unclear": a lowercase letter followed by a word is an article.
        rest = text[m.end():].lstrip()
        if letter.islower() and rest[:1].isalpha():
            continue
        if letter.upper() in LETTERS[:n_options]:
            out.append(letter.upper())
    return out


def extract_letter(text: str, n_options: int = 10) -> str:
    """Return the stated option letter (uppercase, within the first `n_options`) or NO_ANSWER.

    The last "answer ..." statement wins, so a response that reasons first and
    concludes later is read by its conclusion.
    """
    if not isinstance(text, str) or not text.strip():
        return NO_ANSWER
    text = _squeeze(text)
    for _name, pattern in _LETTER_STEPS:
        matches = _letters(pattern, text, n_options)
        if matches:
            return matches[-1]
    return NO_ANSWER


def parse_number(text: str) -> float | None:
    """Parse one number as people and models write it, or None.

    "1,234.5" -> 1234.5; "(12)" -> -12.0 (accounting); "12%" -> 12.0; "−3" -> -3.0;
    "2.5e-3" -> 0.0025; "$1,000" -> 1000.0.
    """
    if not isinstance(text, str):
        return None
    m = _NUMBER_STRICT.fullmatch(text.strip().rstrip("."))
    if not m or bool(m.group("neg")) != bool(m.group("close")):  # "(12" is a cut "(12)", not 12
        return None
    return _number_from_match(m)


def _number_from_match(m: re.Match) -> float | None:
    try:
        value = float(m.group("num").replace(",", "") + (m.group("exp") or ""))
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    if m.group("sign") in ("-", "\u2212"):
        value = -value
    if m.group("neg") and m.group("close"):
        value = -abs(value)
    return value


def format_number(value: float) -> str:
    """Canonical text of a number: `format_number(1234.50) == "1234.5"`, `format_number(3.0) == "3"`."""
    value = round(value, 10)  # round first: 2.00000000001 -> "2", not "2.0" (extract(target(a)) == a)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def extract_number(text: str) -> str:
    """Return the stated number (after the last "answer", else the last number) or NO_ANSWER."""
    if not isinstance(text, str) or not text.strip():
        return NO_ANSWER
    text = _squeeze(text)
    starts = [m.end() for m in _ANSWER_NUMBER.finditer(text)]
    if starts:
        m = _NUMBER_STRICT.match(text, starts[-1])
        if m:
            value = _number_from_match(m)
            if value is not None:
                return format_number(value)
    numbers = [_number_from_match(m) for m in _NUMBER_STRICT.finditer(text)]
    numbers = [n for n in numbers if n is not None]
    return format_number(numbers[-1]) if numbers else NO_ANSWER


def numbers_match(pred: str, gold: str, tol: float = 1e-2) -> bool:
    """Numeric answers are correct within an absolute error of `tol` (the paper's 1e-2)."""
    p, g = parse_number(pred), parse_number(gold)
    if p is None or g is None:
        return False
    return abs(p - g) <= tol + 1e-9
