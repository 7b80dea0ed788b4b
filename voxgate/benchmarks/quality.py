"""Answer quality: short spoken-style questions with the words a right answer must (and must not)
contain, and the scorer. ``voxgate bench quality`` asks them (voxgate/benchmarks/quality_run.py).

Scoring is by words, not by a judge model: an answer is right when every ``must`` group has one of
its alternatives in it and no ``must_not`` phrase is. Phrases match whole words, case-insensitive,
with punctuation and hyphens ignored ("twenty-four" matches "twenty four").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NOT_WORD = re.compile(r"[^a-z0-9]+")


def words_of(text: str) -> str:
    """Lowercase words joined by single spaces, padded with one on each side for whole-word search."""
    text = text.lower()
    return f" {' '.join(_NOT_WORD.sub(' ', text).split())} "


def contains(answer_words: str, phrase: str) -> bool:
    return words_of(phrase) in answer_words


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    must: tuple[tuple[str, ...], ...]
    """Each group needs one of its alternatives in the answer."""
    must_not: tuple[str, ...] = ()
    """Any of these in the answer makes it wrong (the usual wrong answers)."""

    def __post_init__(self) -> None:
        if not self.must or any(not group for group in self.must):
            raise ValueError(f"question {self.text!r}: every must group needs an alternative")


@dataclass(frozen=True, slots=True)
class Verdict:
    right: bool
    missing: tuple[tuple[str, ...], ...]
    """The must groups none of whose alternatives appeared."""
    forbidden: tuple[str, ...]
    """The must_not phrases that appeared."""


def score(question: Question, answer: str) -> Verdict:
    found = words_of(answer)
    missing = tuple(g for g in question.must if not any(contains(found, alt) for alt in g))
    forbidden = tuple(p for p in question.must_not if contains(found, p))
    return Verdict(not missing and not forbidden, missing, forbidden)


def _q(text: str, *must: str | tuple[str, ...], must_not: tuple[str, ...] = ()) -> Question:
    groups = tuple((m,) if isinstance(m, str) else m for m in must)
    return Question(text, groups, must_not)


# Things a child or a household asks a voice assistant, worded as they are said. Facts with one
# clear answer, so the words above decide; none of them is in a prompt's examples.
QUESTIONS: tuple[Question, ...] = (
    _q("How many legs does a spider have?", ("8", "eight"), must_not=("five legs", "ten legs")),
    _q("What's the biggest planet?", "jupiter"),
    _q(
        "What colour do you get if you mix blue and yellow?",
        "green",
        must_not=("purple", "orange", "light blue"),
    ),
    _q("What colour do you get when you mix red and white?", "pink", must_not=("purple",)),
    _q("What colour is the sky on a sunny day?", "blue"),
    _q("What do bees make?", "honey"),
    _q("What's the capital of France?", "paris"),
    _q("What's the capital of Japan?", "tokyo"),
    _q("What's the capital of England?", "london"),
    _q("How many days are there in a week?", ("7", "seven"), must_not=("five days",)),
    _q("How many months are in a year?", ("12", "twelve")),
    _q("How many hours are in a day?", ("24", "twenty four")),
    _q("How many minutes are in an hour?", ("60", "sixty")),
    _q("What's two plus two?", ("4", "four"), must_not=("5", "five", "22")),
    _q("What's five plus three?", ("8", "eight")),
    _q("What's ten minus four?", ("6", "six")),
    _q("What's three times three?", ("9", "nine")),
    _q("What's half of ten?", ("5", "five")),
    _q("What planet do we live on?", "earth"),
    _q("What's the closest star to Earth?", ("sun", "proxima")),
    _q("What do caterpillars turn into?", ("butterfly", "butterflies", "moth", "moths")),
    _q("What's a baby dog called?", ("puppy", "puppies", "pup")),
    _q("What do you call a baby cat?", ("kitten", "kittens", "kitty")),
    _q("What's a baby cow called?", ("calf", "calves")),
    _q("What sound does a cow make?", "moo"),
    _q("Which animal is called the king of the jungle?", "lion"),
    _q("What's the biggest animal in the whole world?", "blue whale"),
    _q("What's the tallest animal?", "giraffe"),
    _q("What do pandas eat?", "bamboo"),
    _q("How many legs does a dog have?", ("4", "four")),
    _q("How many wheels does a bicycle have?", ("2", "two")),
    _q("How many legs does an insect have?", ("6", "six")),
    _q("What does a thermometer measure?", ("temperature", "how hot", "how cold")),
    _q("What do you call frozen water?", "ice"),
    _q("What gas do we need to breathe to stay alive?", "oxygen"),
    _q("What's the opposite of hot?", "cold"),
    _q("What's the opposite of up?", "down"),
    _q("Which season comes after winter?", "spring"),
    _q("What day comes after Monday?", "tuesday"),
    _q("What month comes after June?", "july"),
    _q("How many sides does a triangle have?", ("3", "three")),
    _q("How many sides does a square have?", ("4", "four")),
    _q("What do you call a shape with eight sides?", "octagon"),
    _q("What do you call a house made of snow and ice?", "igloo"),
    _q("Where do penguins live?", ("antarctica", "antarctic", "south pole", "southern")),
    _q("At what temperature does water boil in Celsius?", ("100", "hundred")),
    _q("How many continents are there?", ("7", "seven")),
    _q("What's the biggest ocean?", "pacific"),
    _q("Who wrote Romeo and Juliet?", "shakespeare"),
    _q("Who was the first person to walk on the moon?", "armstrong"),
    _q("What fruit is long, yellow and curved?", ("banana", "bananas")),
    _q("What's a baby frog called?", ("tadpole", "tadpoles", "froglet")),
    _q("Which direction does the sun rise in?", "east"),
    _q("What's the biggest country in the world?", "russia"),
    _q("How many players does a soccer team have on the field?", ("11", "eleven")),
    _q("What's the fastest land animal?", "cheetah"),
    _q("What do you put on a pan on fire to put it out?", ("lid", "cover", "fire blanket")),
    _q("What do we call the hot liquid rock that comes out of a volcano?", ("lava", "magma")),
)
