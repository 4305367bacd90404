"""Property tests: extraction never raises and reads back every SFT target; loaders raise only UserError."""

import json
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semievol_lf.data.extraction import (
    AMBIGUOUS,
    LETTERS,
    NO_ANSWER,
    extract_letter,
    extract_number,
    format_number,
    parse_number,
    read_letter,
)
from semievol_lf.data.loading import load_examples
from semievol_lf.data.tasks import builtin_tasks, get_task
from semievol_lf.errors import UserError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LETTER_TASKS = [t for t in map(get_task, builtin_tasks()) if t.answer_type == "letter"]
NUMBER_TASK = get_task("convfinqa")

# Text built from the pieces the patterns look for, so the examples reach past the first regex.
PIECES = ["answer", "Answer", "is", "option", "choice", ":", "=", "-", "(", ")", ".", " ", "\n", "\t", "A", "b", "C",
          "j", "K", "1", "2,345", ".5", "e-3", "%", "$", "\u2212", "+", "the", "a bit"]
responses = st.one_of(st.text(max_size=300), st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
# finite floats people and models write: negatives, decimals, large and tiny values
numbers = st.one_of(st.integers(-10**12, 10**12).map(float),
                    st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 4)),
                    st.floats(allow_nan=False, allow_infinity=False))


@FAST
@given(text=responses, n=st.integers(1, 10))
def test_extract_letter_never_raises_nor_leaves_the_options(text, n):
    assert extract_letter(text, n) in (*LETTERS[:n], NO_ANSWER)


@FAST
@given(text=responses)
def test_extract_number_never_raises_and_returns_a_number(text):
    out = extract_number(text)
    assert out == NO_ANSWER or (parse_number(out) is not None and format_number(parse_number(out)) == out)


@pytest.mark.parametrize("text", [" " * 20_000 + "x", "answer" + " \n" * 20_000 + "x", "option" + "\t" * 20_000,
                                  "( " * 20_000, "answer is " * 5_000])
def test_extraction_is_fast_on_degenerate_responses(text):
    """Stuck models emit pages of blanks; 3,000 of them once took minutes (regex backtracking)."""
    start = time.perf_counter()
    extract_letter(text), extract_number(text)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("task", LETTER_TASKS, ids=lambda t: t.name)
def test_every_letter_target_round_trips(task):
    for n in range(2, task.max_options + 1):
        for letter in LETTERS[:n]:
            assert task.extract(task.target(letter), n) == letter
            assert task.normalise_answer(letter, n) == letter


@FAST
@given(x=numbers)
def test_number_targets_round_trip(x):
    answer = format_number(x)
    assert NUMBER_TASK.extract(NUMBER_TASK.target(answer)) == answer
    assert NUMBER_TASK.normalise_answer(answer, 0) == answer
    assert math.isclose(parse_number(answer), x, rel_tol=1e-12, abs_tol=1e-10)


@FAST
@given(reasoning=responses, letter=st.sampled_from(LETTERS), x=numbers)
def test_the_concluding_target_wins_over_reasoning(reasoning, letter, x):
    """A response that reasons first and ends with the SFT target is read by the target."""
    assert extract_letter(reasoning + "\n" + f"Answer: {letter}") == letter
    answer = format_number(x)
    assert extract_number(reasoning + "\n" + NUMBER_TASK.target(answer)) == answer


# --- the shapes real models answer in (issue 12) ---------------------------------------------------------------------

# Option texts no English word of the templates below can equal: whole words from q, v, x, z.
option_lists = st.integers(2, 10).flatmap(
    lambda n: st.lists(st.text(alphabet="qvxz", min_size=3, max_size=8), min_size=n, max_size=n, unique=True))
case = st.sampled_from([str, str.upper, str.title])
MARKDOWN = ["**Answer:** {L}", "Answer: **{L}**", "The answer is **{L}**.", "\\boxed{{{L}}}",
            "So it is $\\boxed{{{L}}}$", "### Answer\n{L}", "Answer: `{L}`", "The answer is: ({L})",
            "**Final answer: {L}**"]
MENTIONS = ["Responses 1 and 3 chose answer {M}, which is wrong.", "Option {M} is tempting but wrong.",
            "Response 2 picked answer ({M}).", "Not option {M}."]
NAMING = ["The sentiment of this sentence from financial news is {t}.", "{t}", "I would say {t}.",
          "It is clearly {t}, given the context."]


def _pick(data, options):
    i = data.draw(st.integers(0, len(options) - 1))
    return i, LETTERS[i]


@FAST
@given(data=st.data(), options=option_lists, reasoning=responses)
def test_markdown_statements_are_read(data, options, reasoning):
    _, letter = _pick(data, options)
    form = data.draw(st.sampled_from(MARKDOWN))
    text = reasoning + "\n" + form.format(L=letter)
    assert extract_letter(text, len(options)) == letter
    assert extract_letter(text, len(options), options) == letter


@FAST
@given(data=st.data(), options=option_lists, reasoning=responses)
def test_an_explicit_answer_beats_later_mentions_of_other_letters(data, options, reasoning):
    _, letter = _pick(data, options)
    _, other = _pick(data, options)
    first = data.draw(st.sampled_from(["Answer: {L}", "**Answer:** {L}", "The answer is {L}.", "\\boxed{{{L}}}"]))
    mentions = data.draw(st.lists(st.sampled_from(MENTIONS), min_size=1, max_size=3))
    text = reasoning + "\n" + first.format(L=letter) + "\n\n" + " ".join(m.format(M=other) for m in mentions)
    assert extract_letter(text, len(options), options) == letter


@FAST
@given(data=st.data(), options=option_lists, n=st.integers(2, 4))
def test_the_last_of_several_explicit_statements_wins(data, options, n):
    letters = [_pick(data, options)[1] for _ in range(n)]
    forms = data.draw(st.lists(st.sampled_from(["Answer: {L}", "the answer is {L}", "**Answer:** {L}"]),
                               min_size=n, max_size=n))
    text = " Hmm, wait. ".join(f.format(L=x) for f, x in zip(forms, letters)) + " Option J? no."
    assert extract_letter(text, len(options), options) == letters[-1]


@FAST
@given(data=st.data(), options=option_lists, style=case)
def test_the_text_of_one_option_names_its_letter(data, options, style):
    i, letter = _pick(data, options)
    text = data.draw(st.sampled_from(NAMING)).format(t=style(options[i]))
    got = read_letter(text, len(options), options)
    assert (got.answer, got.rule) == (letter, "option_text")
    assert extract_letter(text, len(options)) == NO_ANSWER  # without the options there is nothing to read


@FAST
@given(data=st.data(), options=option_lists, style=case)
def test_a_letter_with_its_own_text_is_that_letter(data, options, style):
    i, letter = _pick(data, options)
    form = data.draw(st.sampled_from(["{l}, {t}", "{l}. {t}", "{l}) {t}", "({l}) {t}", "{L}. {t}", "Answer: {l} {t}",
                                      "**Answer:** {L} ({t})"]))
    text = form.format(l=letter.lower(), L=letter, t=style(options[i]))
    assert extract_letter(text, len(options), options) == letter


@FAST
@given(data=st.data(), options=option_lists, style=case)
def test_a_letter_with_another_options_text_is_ambiguous(data, options, style):
    i, letter = _pick(data, options)
    j = data.draw(st.integers(0, len(options) - 1).filter(lambda j: j != i))
    form = data.draw(st.sampled_from(["{L}. {t}", "{l}, {t}", "Answer: {L} ({t})", "**Answer:** {L} - {t}"]))
    got = read_letter(form.format(l=letter.lower(), L=letter, t=style(options[j])), len(options), options)
    assert (got.answer, got.rule, got.ambiguous) == (NO_ANSWER, AMBIGUOUS, True)


@FAST
@given(text=responses, options=st.lists(st.sampled_from(PIECES + ["red", "blue", "a bit", "answer is"]), min_size=1,
                                        max_size=10))
def test_extract_letter_with_options_never_raises_nor_leaves_them(text, options):
    """Any option texts, repeated or empty ones and ones made of the patterns' own words included."""
    got = read_letter(text, len(options), options)
    assert got.answer in (*LETTERS[:len(options)], NO_ANSWER)
    assert got.ambiguous is (got.rule == AMBIGUOUS) and (got.answer == NO_ANSWER or not got.ambiguous)


@FAST
@given(x=st.one_of(st.integers(-10**9, 10**9), st.decimals(-10**9, 10**9, places=2, allow_nan=False)))
def test_human_number_forms_parse(x):
    value = float(x)
    assert parse_number(f"{x:,}") == pytest.approx(value)
    assert parse_number(f"{x}%") == pytest.approx(value)
    assert parse_number(str(x).replace("-", "\u2212")) == pytest.approx(value)
    assert parse_number(f"({abs(x):,})") == pytest.approx(-abs(value))
    assert parse_number(f"${x}.") == pytest.approx(value) if value >= 0 else True


# --- loaders ---------------------------------------------------------------------------------------------------------

KEYS = ["question", "options", "answer", "question_id", "id", "category", "Subject", "gt"]
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=12) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3),
                           max_leaves=20)
rows = st.lists(st.one_of(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6), json_values), max_size=5)
CSV_PIECES = ["question", "options", "answer", "question_id", ",", ";", '"', '""', "\n", "\r\n", "\r", "[", "]", "'",
              "A", "E", "1,234.5", "(12)", "\u2212", " ", "\x00", "\ufeff", "\x0c", "\u2028", "\xe9"]
csv_like = st.lists(st.sampled_from(CSV_PIECES), max_size=60).map(lambda p: "".join(p).encode("utf-8", "surrogatepass"))
contents = st.one_of(
    st.binary(max_size=300),
    csv_like,
    csv_like.map(lambda b: b.replace(b"\xc3\xa9", b"\xe9")),  # latin-1 bytes in UTF-8 text
    rows.map(lambda r: json.dumps(r).encode()),
    rows.map(lambda r: "\n".join(json.dumps(x, ensure_ascii=False) for x in r).encode()),
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("random_files")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=contents, suffix=st.sampled_from([".csv", ".json", ".jsonl"]),
       task=st.sampled_from(["mmlu", "mmlu_pro", "convfinqa", "arc"]),
       split=st.sampled_from(["labeled", "unlabeled", "test"]))
def test_loaders_raise_only_user_errors(scratch, content, suffix, task, split):
    path = scratch / f"{split}{suffix}"
    path.write_bytes(content)
    try:
        examples = load_examples(path, get_task(task), split)
    except UserError as err:
        assert "\n" not in str(err) and str(path) in str(err)
        return
    for ex in examples:  # what loads is well-formed
        assert ex.question.strip() and ex.uid
        assert (ex.answer is None) == (split == "unlabeled")
