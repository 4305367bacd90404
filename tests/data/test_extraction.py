import pytest

from semievol_lf.data.extraction import (
    AMBIGUOUS,
    NO_ANSWER,
    extract_letter,
    extract_number,
    numbers_match,
    parse_number,
    read_letter,
)
from semievol_lf.data.tasks import builtin_tasks, get_task
from semievol_lf.errors import UserError


@pytest.mark.parametrize("text, expected", [
    ("Answer: C", "C"),
    ("answer: c.", "C"),
    ("(C)", "C"),
    ("The answer is C", "C"),
    ("C) Paris is the capital", "C"),
    ("The correct option is D.", "D"),
    ("Let's think. A is wrong, B is wrong.\nTherefore, the answer is (B).", "B"),
    ("Response 1 says A. After checking, Answer: B", "B"),  # the conclusion wins
    ("The answer is a bit unclear", NO_ANSWER),  # an article, not an option
    ("Answer: Cells divide", NO_ANSWER),  # the start of a word
    ("Answer: E", NO_ANSWER),  # outside the 4 options
    ("I don't know", NO_ANSWER),
    ("", NO_ANSWER),
])
def test_extract_letter_forms_models_write(text, expected):
    assert extract_letter(text, n_options=4) == expected


@pytest.mark.parametrize("text, expected", [
    ("Answer: 1,234.5", "1234.5"),
    ("The answer is -3", "-3"),
    ("answer: \u22123.25", "-3.25"),  # unicode minus
    ("Growth was 12.5%", "0.125"),  # a % is /100, as the authors score ConvFinQA (was "12.5")
    ("Answer: 2.5e-3", "0.0025"),
    ("Revenue rose from 100 to 120, so the answer is 20.", "20"),
    ("It went from 3 to 7", "7"),  # no 'answer': the last number
    ("Answer: $1,000,000", "1000000"),
    ("no numbers here", NO_ANSWER),
])
def test_extract_number_forms(text, expected):
    assert extract_number(text) == expected


@pytest.mark.parametrize("text, value", [("(12)", -12.0), ("12%", 12.0), ("+4", 4.0), (".5", 0.5), ("1e3", 1000.0),
                                         ("abc", None), ("1,23", None)])
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_numbers_match_within_tolerance():
    assert numbers_match("3.141", "3.14")
    assert not numbers_match("3.20", "3.14")  # relative 1e-2 since issue 12 (3.16 was outside the absolute 1e-2)
    assert not numbers_match(NO_ANSWER, "3")


@pytest.mark.parametrize("pred, gold, same", [
    ("14.1%", "0.141", True),  # the example: a % means /100 on either side
    ("0.141", "14.1%", True),
    ("14.1", "14.1%", False),  # 14.1 is not 0.141, as in the authors' check_answer_value
    ("1009", "1000", True),  # relative: 0.9% off
    ("1011", "1000", False),  # 1.1% off
    ("-0.0101", "-0.01", True),
    ("0.02", "0.01", False),  # an absolute 1e-2 accepted this
    ("0.001", "0", False),  # a gold 0 needs 0 (math.isclose without abs_tol, as the authors)
    ("(5)", "-5", True),
])
def test_convfinqa_is_scored_as_the_authors_score_it(pred, gold, same):
    """Official code, common.py: math.isclose(pred, gold, rel_tol=1e-2) after `%` -> `/100`."""
    task = get_task("convfinqa")
    assert numbers_match(pred, gold) is same
    assert task.is_correct(task.extract(f"Answer: {pred}"), task.normalise_answer(gold, 0)) is same


def test_a_percent_answer_is_stored_and_read_as_its_value():
    task = get_task("convfinqa")
    assert task.normalise_answer("14.1%", 0) == "0.141" == task.extract("The change was 14.1%.")
    assert task.extract(task.target("0.141")) == "0.141"


FPB = ["negative", "neutral", "positive"]


@pytest.mark.parametrize("text, expected", [
    # Markdown, as instruction-tuned models write it
    ("**Answer:** C", "C"),
    ("Answer: **C**", "C"),
    ("The answer is **C**.", "C"),
    ("**C**", "C"),
    ("Answer: `C`", "C"),
    ("### Answer\nC", "C"),
    ("\\boxed{C}", "C"),
    ("So the final answer is $\\boxed{\\text{C}}$.", "C"),
    ("The answer is: (C)", "C"),
    # an explicit statement beats a passing mention, wherever the mention is
    ("Answer: B\n\nResponses 1 and 3 chose answer D, which is wrong.", "B"),
    ("Answer: B. Option D is tempting but wrong.", "B"),
    ("Responses 1 and 3 chose answer D. After checking, Answer: B", "B"),
    ("The correct option is B; response 2 picked answer D.", "B"),
    # several explicit statements: the last one wins
    ("Answer: B\nOn reflection, the answer is D.", "D"),
    ("The answer is A... no wait. **Answer:** C", "C"),
    ("answer D was chosen twice", "D"),  # only a mention: still read
])
def test_markdown_and_explicit_statements(text, expected):
    assert extract_letter(text, n_options=4) == expected
    assert extract_letter(text, n_options=4, options=["up", "down", "left", "right"]) == expected


@pytest.mark.parametrize("text, expected, rule", [
    # the option's text instead of its letter: the letter of the one option named
    ("The sentiment of this sentence from financial news is neutral.", "B", "option_text"),
    ("Positive.", "C", "option_text"),
    ("It is not positive; it is negative.", NO_ANSWER, "none"),  # two options named: no answer
    # a lower-case letter with its text
    ("c, positive", "C", "leading"),
    ("b) neutral", "B", "leading"),
    ("The answer is c positive", "C", "answer_is"),
    ("The answer is a negative one", "A", "answer_is"),  # "a" is A's own text here, not an article
    # letter and text disagree: ambiguous, counted, never a label
    ("A. positive", NO_ANSWER, AMBIGUOUS),
    ("Answer: A (positive)", NO_ANSWER, AMBIGUOUS),
    ("**Answer:** C - negative", NO_ANSWER, AMBIGUOUS),
    ("A. negative", "A", "leading"),
    ("Answer: C. Positive, because profit rose.", "C", "answer_is"),
])
def test_option_texts_fpb(text, expected, rule):
    """Shapes SmolLM2-135M-Instruct wrote for released FPB questions (issue 12)."""
    got = read_letter(text, 3, FPB)
    assert (got.answer, got.rule) == (expected, rule)
    assert get_task("fpb").extract(text, 3, FPB) == expected
    assert got.ambiguous is (rule == AMBIGUOUS)


def test_option_text_edge_cases():
    assert extract_letter("very positive", 3, ["positive", "very positive", "negative"]) == "B"  # the longer text
    assert extract_letter("B. the cell wall", 2, ["the cell", "the cell wall"]) == "B"
    assert read_letter("A. the cell wall", 2, ["the cell", "the cell wall"]).rule == AMBIGUOUS
    assert extract_letter("It is red.", 3, ["red", "blue", "red"]) == NO_ANSWER  # a repeated text names two letters
    assert extract_letter("A. red", 3, ["red", "blue", "red"]) == "A"  # letters are positional
    assert extract_letter("C. red", 3, ["red", "blue", "red"]) == "C"
    assert extract_letter("The answer is a bit unclear", 3, ["bit", "byte", "word"]) == "A"  # A's own text
    assert extract_letter("neutral", 3) == NO_ANSWER  # without the options, a text is no answer
    assert extract_letter("Answer: yes", 3, ["yes", "no", "maybe"]) == "A"


@pytest.mark.parametrize("text, expected", [
    ("Answer: C", "C"), ("answer: c.", "C"), ("(C)", "C"), ("The answer is C", "C"), ("C) Paris is the capital", "C"),
    ("The correct option is D.", "D"), ("Let's think. A is wrong, B is wrong.\nTherefore, the answer is (B).", "B"),
    ("Response 1 says A. After checking, Answer: B", "B"), ("The answer is a bit unclear", NO_ANSWER),
    ("Answer: Cells divide", NO_ANSWER), ("Answer: E", NO_ANSWER), ("I don't know", NO_ANSWER), ("", NO_ANSWER),
])
def test_earlier_forms_read_the_same_with_the_options_known(text, expected):
    """Passing the options (as pseudolabel and evaluate now do) changes none of the earlier answers."""
    assert extract_letter(text, 4, ["Rome", "Berlin", "Paris", "Madrid"]) == expected


def test_targets_round_trip_for_every_task():
    for task in map(get_task, builtin_tasks()):
        answers = ["A", "B", "C"] if task.has_options else ["12.5", "-3", "1000"]
        for a in answers:
            assert task.extract(task.target(a), 3 if task.has_options else None) == a


def test_unknown_task_suggests_the_close_name():
    known = r"Available: arc, convfinqa, demo, fpb, mmlu, mmlu_pro, pubmedqa, usmle, or a task file"
    with pytest.raises(UserError, match=r"Unknown task 'mmlu-pro'. Did you mean: mmlu_pro\? " + known):
        get_task("mmlu-pro")
