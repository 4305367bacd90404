import pytest

from semievol_lf.extraction import NO_ANSWER, extract_letter, extract_number, numbers_match, parse_number
from semievol_lf.tasks import TASKS, get_task
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
    ("Growth was 12.5%", "12.5"),
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
    assert not numbers_match("3.16", "3.14")
    assert not numbers_match(NO_ANSWER, "3")


def test_targets_round_trip_for_every_task():
    for task in TASKS.values():
        answers = ["A", "B", "C"] if task.has_options else ["12.5", "-3", "1000"]
        for a in answers:
            assert task.extract(task.target(a), 3 if task.has_options else None) == a


def test_unknown_task_suggests_the_close_name():
    with pytest.raises(UserError, match=r"Unknown task 'mmlu-pro'. Did you mean: mmlu_pro\? Available: mmlu"):
        get_task("mmlu-pro")
