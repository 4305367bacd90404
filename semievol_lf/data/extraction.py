r"""Answer extraction from free-form model responses, as small named steps.

Every extractor returns a canonical answer (a letter "A".."J", or a number written by
`format_number`) or `NO_ANSWER`; it never raises and never returns an empty label.

    >>> extract_letter("The answer is (c).", n_options=4)
    'C'
    >>> extract_letter("**Answer:** B\n\nResponses 1 and 3 chose answer D, which is wrong.", n_options=4)
    'B'
    >>> extract_letter("The sentiment is neutral.", 3, options=["negative", "neutral", "positive"])
    'B'
    >>> extract_letter('The sentiment of the sentence is "B".', 3)
    'B'
    >>> read_letter("A. positive", 3, options=["negative", "neutral", "positive"]).rule
    'ambiguous'
    >>> extract_number("Answer: -1,234.5%")
    '-12.345'

Letters, strongest evidence first (the first step with a match decides; within it, the last
match wins, so a response that reasons first and concludes later is read by its conclusion):
  1. an explicit statement: `Answer: C`, `the answer is (C)`, `\boxed{C}`;
  2. an explicit option statement: `the correct option is D`;
  3. a passing mention: `chose answer D`, then `option D`;
  4. a letter opening the response (`C) Paris`, `c, positive`), then `(C)` anywhere, then a
     quoted capital letter stated (`... is "B".`);
  5. with the options known, the text of exactly one option (`... is neutral.`).
Markdown emphasis (`**`, `` ` ``) is ignored. A letter followed by another option's text
(`A. positive` where A is negative) is ambiguous: NO_ANSWER, with `rule == "ambiguous"` so
callers can count it.

Numbers: a `%` divides by 100, as the authors' scoring does (`14.1%` is 0.141).

Not handled on purpose: numbers written in words ("twelve"), and option texts that are
only paraphrased.
"""

import math
import re
from dataclasses import dataclass

NO_ANSWER = "[no answer]"
LETTERS = "ABCDEFGHIJ"
AMBIGUOUS = "ambiguous"  # Extraction.rule of a letter contradicted by the option text after it

# A letter counts only where a model states an answer, and never as the start of a word.
_LETTER = r"\(?\s*([A-Ja-j])(?![A-Za-z0-9])\s*\)?"
_ANSWER_SAYS = r"answer\s*(?:(?:is|was|would\s+be|will\s+be|should\s+be)\s*[:=-]?|[:=-])\s*(?:option\s*|choice\s*)?"
_LEADING_COMMA = re.compile(r"^\s*\(?([A-Ja-j])\s*\)?\s*,", re.IGNORECASE)  # "c, positive": only before a text
_LETTER_STEPS: list[tuple[str, list[re.Pattern]]] = [
    ("answer_is", [re.compile(_ANSWER_SAYS + _LETTER, re.IGNORECASE),
                   re.compile(r"\\boxed\s*\{\s*(?:\\text(?:bf)?\s*\{\s*)?\(?\s*([A-Ja-j])\s*\)?\s*\}", re.IGNORECASE)]),
    ("option_is", [re.compile(r"(?:option|choice)\s*(?:is\s*:?|:)\s*" + _LETTER, re.IGNORECASE)]),
    ("answer_mention", [re.compile(r"answer\s*(?:option\s*)?" + _LETTER, re.IGNORECASE)]),
    ("option_mention", [re.compile(r"(?:option|choice)\s*" + _LETTER, re.IGNORECASE)]),
    ("leading", [re.compile(r"^\s*\(?([A-Ja-j])(?:\)|\.|:|$|\s*\)|\s+-)", re.IGNORECASE), _LEADING_COMMA]),
    ("parenthesised", [re.compile(r"\(([A-J])\)")]),
    # SmolLM2-135M-Instruct's zero-shot habit: `The sentiment of the sentence is "B".` (or `"C."`)
    ("quoted", [re.compile(r"(?:\bis|:)\s*[\"\u201c']([A-J])\.?[\"\u201d']")]),
]
_MARKDOWN = re.compile(r"[*`]+")  # **Answer:** C, Answer: **C**, `C`
_BETWEEN = re.compile(r"[\s.,:;()\-\u2013\u2014]*")  # between a letter and the option text after it


@dataclass(frozen=True)
class Extraction:
    """An answer and the step that found it (`answer_is`, ..., `option_text`; `none`; `ambiguous`)."""

    answer: str
    rule: str

    @property
    def ambiguous(self) -> bool:
        return self.rule == AMBIGUOUS


def _squeeze(text: str) -> str:
    """Strip and turn every whitespace run into one space: the optional `\\s*` pieces of the patterns
    backtrack cubically on long runs (3,000 blanks took minutes), and stuck models emit pages of them."""
    return " ".join(text.split())


def _lower(text: str) -> str:
    """Lower case of the same length, so positions in it are positions in `text` ("İ".lower() has two)."""
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _norm(text: str) -> str:
    """How option texts are compared with a response: no markdown, one space, lower case, no final period."""
    return _squeeze(_MARKDOWN.sub("", text)).lower().rstrip(".").rstrip()


def _text_after(lowered: str, end: int, texts: list[str]) -> set[int]:
    """Options whose text follows position `end` (after `. , : ) -`), as whole words; only the longest
    ("the cell wall", not its prefix "the cell"); every letter of a repeated text."""
    pos = _BETWEEN.match(lowered, end).end()
    found = [i for i, t in enumerate(texts) if t and lowered.startswith(t, pos)
             and not lowered[pos + len(t):pos + len(t) + 1].isalnum()]
    longest = max((len(texts[i]) for i in found), default=0)
    return {i for i in found if len(texts[i]) == longest}


def _hits(patterns: list[re.Pattern], text: str, lowered: str, n_options: int,
          texts: list[str]) -> list[tuple[int, str, int]]:
    """(position, letter, end of its match) of every acceptable letter, in text order."""
    out = []
    for pattern in patterns:
        for m in pattern.finditer(text):
            letter = m.group(1).upper()
            if letter not in LETTERS[:n_options]:
                continue
            # "the answer is a bit unclear": a lowercase letter followed by a word is an article,
            # unless the word is that letter's own option text ("the answer is c positive").
            if (m.group(1).islower() and text[m.end(1):].lstrip()[:1].isalpha()
                    and LETTERS.index(letter) not in _text_after(lowered, m.end(1), texts)):
                continue
            if pattern is _LEADING_COMMA and not _text_after(lowered, m.end(), texts):
                continue
            out.append((m.start(1), letter, m.end()))
    return sorted(out)


def read_letter(text: str, n_options: int = 10, options: list[str] | None = None) -> Extraction:
    """The stated option letter (uppercase, within the first `n_options`) and the step that found it.

    `options` (the option texts, in letter order) enable the option-text step and the check that a
    letter is not followed by another option's text.
    """
    if not isinstance(text, str) or not text.strip():
        return Extraction(NO_ANSWER, "none")
    text = _squeeze(_MARKDOWN.sub("", text))
    lowered = _lower(text)
    texts = [_norm(str(o)) for o in (options or [])][:n_options]
    for name, patterns in _LETTER_STEPS:
        hits = _hits(patterns, text, lowered, n_options, texts)
        if hits:
            _, letter, end = hits[-1]
            named = _text_after(lowered, end, texts)
            if named and LETTERS.index(letter) not in named:  # "A. positive" where A is negative
                return Extraction(NO_ANSWER, AMBIGUOUS)
            return Extraction(letter, name)
    letter = _option_named(lowered, texts)
    return Extraction(letter, "option_text") if letter else Extraction(NO_ANSWER, "none")


def _option_named(lowered: str, texts: list[str]) -> str | None:
    """The letter of the one option whose text the response names; None when none or several are named.

    An option named only inside a longer named option ("positive" in "very positive") does not count;
    two letters with the same text are not one answer.
    """
    spans = {}  # option index -> [(start, end)] of its whole-word occurrences
    for i, t in enumerate(texts):
        if t:
            found = [m.span() for m in re.finditer(r"(?<![a-z0-9])" + re.escape(t) + r"(?![a-z0-9])", lowered)]
            if found:
                spans[i] = found

    def inside(a: int, b: int, i: int) -> bool:  # within a longer occurrence of another option
        return any(s <= a and b <= e and e - s > b - a for j, other in spans.items() if j != i for s, e in other)

    named = [i for i, found in spans.items() if not all(inside(a, b, i) for a, b in found)]
    return LETTERS[named[0]] if len(named) == 1 else None


def extract_letter(text: str, n_options: int = 10, options: list[str] | None = None) -> str:
    """Return the stated option letter (uppercase, within the first `n_options`) or NO_ANSWER.

    See the module docstring for the steps; `read_letter` also says which step decided.
    """
    return read_letter(text, n_options, options).answer


def read_label(text: str, labels: tuple[str, ...] | list[str]) -> Extraction:
    """The label word a response gives (canonical spelling from `labels`), case-insensitive.

    Two steps, the last hit of the first step that finds one wins: `answer_is` ("Answer: Bug",
    "the answer is billing") and `label_word` (a label named anywhere, as a whole word; a label
    inside a longer label, "positive" in "very positive", does not count there).

    >>> read_label("It looks like a bug. Answer: **Feature**", ["billing", "bug", "feature"])
    Extraction(answer='feature', rule='answer_is')
    >>> read_label("Billing, not a bug.", ["billing", "bug"])
    Extraction(answer='bug', rule='label_word')
    >>> read_label("no idea", ["billing", "bug"]).answer == NO_ANSWER
    True
    """
    if not isinstance(text, str) or not text.strip() or not labels:
        return Extraction(NO_ANSWER, "none")
    lowered = _squeeze(_MARKDOWN.sub("", text)).lower()
    canonical = {label.lower(): label for label in labels}
    words = "|".join(re.escape(w) for w in sorted(canonical, key=len, reverse=True))  # longest first
    word = rf"(?<![a-z0-9])({words})(?![a-z0-9])"
    for rule, pattern in (("answer_is", _ANSWER_SAYS + r"[\s\"'(\[]*" + word), ("label_word", word)):
        hits = list(re.finditer(pattern, lowered))
        if hits:
            return Extraction(canonical[hits[-1].group(1)], rule)
    return Extraction(NO_ANSWER, "none")


_NUMBER_STRICT = re.compile(
    r"(?P<neg>\()?\s*(?P<sign>[-+\u2212])?\s*\$?(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?P<exp>[eE][-+]?\d+)?(?P<close>\))?\s*(?P<pct>%)?"
)
_ANSWER_NUMBER = re.compile(r"answer\s*(?:is|:|=)?\s*:?\s*", re.IGNORECASE)
# ConvFinQA is scored as the authors score it (official code, common.py `check_answer_value`):
# math.isclose(pred, gold, rel_tol=1e-2) after "%" -> "/100" on both sides, so 14.1% equals 0.141.
REL_TOL = 1e-2


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


def _number_from_match(m: re.Match, percent: bool = False) -> float | None:
    """The number of a `_NUMBER_STRICT` match; `percent`: a trailing % divides it by 100."""
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
    if percent and m.group("pct"):
        value /= 100
    return value


def parse_value(text: str) -> float | None:
    """The value an answer stands for: `parse_number`, with a trailing % meaning /100 ("14.1%" -> 0.141)."""
    if not isinstance(text, str):
        return None
    m = _NUMBER_STRICT.fullmatch(text.strip().rstrip("."))
    if not m or bool(m.group("neg")) != bool(m.group("close")):
        return None
    return _number_from_match(m, percent=True)


def format_number(value: float) -> str:
    """Canonical text of a number: `format_number(1234.50) == "1234.5"`, `format_number(3.0) == "3"`."""
    value = round(value, 10)  # round first: 2.00000000001 -> "2", not "2.0" (extract(target(a)) == a)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def extract_number(text: str) -> str:
    """Return the stated value (after the last "answer", else the last number; "12.5%" -> "0.125") or NO_ANSWER."""
    if not isinstance(text, str) or not text.strip():
        return NO_ANSWER
    text = _squeeze(text)
    starts = [m.end() for m in _ANSWER_NUMBER.finditer(text)]
    if starts:
        m = _NUMBER_STRICT.match(text, starts[-1])
        if m:
            value = _number_from_match(m, percent=True)
            if value is not None:
                return format_number(value)
    numbers = [_number_from_match(m, percent=True) for m in _NUMBER_STRICT.finditer(text)]
    numbers = [n for n in numbers if n is not None]
    return format_number(numbers[-1]) if numbers else NO_ANSWER


def numbers_match(pred: str, gold: str, rel_tol: float = REL_TOL) -> bool:
    """Correct within a relative error of `rel_tol` (the authors' 1e-2), a % meaning /100:
    `numbers_match("14.1%", "0.141")`, `numbers_match("101", "100")`, not `numbers_match("0.02", "0")`."""
    p, g = parse_value(pred), parse_value(gold)
    if p is None or g is None:
        return False
    return math.isclose(p, g, rel_tol=rel_tol)
