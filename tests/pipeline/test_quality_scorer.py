"""The quality bench's scorer on literal answers: what counts as right, and what does not."""

from __future__ import annotations

import pytest

from voxgate.benchmarks.quality import QUESTIONS, Question, contains, score, words_of
from voxgate.benchmarks.quality_report import select_prompts
from voxgate.benchmarks.quality_run import Answer, Cell

SPIDER = next(q for q in QUESTIONS if "spider" in q.text)
MIX = next(q for q in QUESTIONS if "blue and yellow" in q.text)
HOURS = next(q for q in QUESTIONS if "hours" in q.text)
PLANET = next(q for q in QUESTIONS if "biggest planet" in q.text)


@pytest.mark.parametrize(
    ("question", "answer", "right"),
    [
        (SPIDER, "A spider has eight legs.", True),
        (SPIDER, "Spiders have 8 legs!", True),
        (SPIDER, "A spider has five legs.", False),
        (SPIDER, "Spiders have lots of legs.", False),
        (MIX, "Blue and yellow make green.", True),
        (MIX, "You get GREEN, like grass!", True),
        (MIX, "They make light blue.", False),
        (MIX, "Green or purple, it depends.", False),  # the right word, and a wrong one
        (HOURS, "There are twenty-four hours in a day.", True),
        (HOURS, "A day has 24 hours.", True),
        (HOURS, "A day has 240 hours.", False),  # whole words only: 24 is not in 240
        (PLANET, "The biggest planet is Earth.", False),
        (PLANET, "Jupiter's the biggest, by far.", True),
    ],
)
def test_literal_answers(question: Question, answer: str, right: bool) -> None:
    assert score(question, answer).right is right


def test_a_wrong_answer_says_why() -> None:
    verdict = score(MIX, "Purple!")
    assert verdict.missing == (("green",),)
    assert verdict.forbidden == ("purple",)


def test_words_are_matched_whole_and_case_blind() -> None:
    said = words_of("The Sun\u2019s up in the EAST\u2014early!")
    assert contains(said, "east")
    assert contains(said, "sun s up")  # an apostrophe splits words: "Jupiter's" has Jupiter
    assert not contains(said, "eas")
    assert not contains(said, "west")


def test_the_set_is_big_enough_and_well_formed() -> None:
    assert len(QUESTIONS) >= 40
    assert len({q.text for q in QUESTIONS}) == len(QUESTIONS)
    with pytest.raises(ValueError, match="alternative"):
        Question("Why?", ((),))


def test_cell_summary_counts_right_answers_and_lengths() -> None:
    cell = Cell("m", "default")
    cell.answers += [
        Answer("q1", "one two three", True, 100.0, 400.0),
        Answer("q2", "one", False, 300.0, 500.0),
    ]
    summary = cell.summary()
    assert summary["right"] == 1
    assert summary["fraction_right"] == 0.5
    assert summary["reply_words_median"] == 2
    assert summary["first_token_ms_p50"] == 200.0


def test_prompts_are_picked_by_label_and_unknown_ones_named() -> None:
    prompts = select_prompts(None, "be brief", {"toy": "be Pip"})
    assert [(p.label, p.system_prompt) for p in prompts] == [
        ("default", "be brief"),
        ("toy", "be Pip"),
    ]
    with pytest.raises(ValueError, match="unknown character robot"):
        select_prompts(["robot"], "be brief", {"toy": "be Pip"})
