"""Scoring what was heard: word and character error rates."""

from __future__ import annotations

import pytest

from voxgate.evaluation import character_error_rate, word_error_rate


def test_a_split_word_costs_little_by_characters_and_much_by_words() -> None:
    reference, heard = "France's capital is Paris.", "Francis capitalist Paris"
    assert word_error_rate(reference, heard) == pytest.approx(0.75)
    assert character_error_rate(reference, heard) == pytest.approx(3 / 22)


def test_character_error_rate_bounds() -> None:
    assert character_error_rate("Hello there.", "hello there") == 0.0
    assert character_error_rate("The capital of France is Paris.", "") == 1.0
    assert character_error_rate("", "anything") == 8.0  # all insertions, per one letter
