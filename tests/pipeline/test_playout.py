"""Playout: how much of a reply the user has heard, reported by the consumer or estimated."""

from __future__ import annotations

import pytest

from voxgate.pipeline.playout import Playout, SpokenSentence

FIRST = "One two three four."  # 1000 ms
SECOND = "Five six."  # 500 ms
T0 = 100.0
"""Clock time (s) the first audio was handed over."""


def two_sentences() -> Playout:
    playout = Playout()
    playout.add_audio(0, FIRST, 400.0, now=T0)
    playout.add_audio(0, FIRST, 600.0, now=T0 + 0.01)  # a second chunk of the same sentence
    playout.add_audio(1, SECOND, 500.0, now=T0 + 0.02)
    return playout


def test_the_timeline_joins_chunks_of_a_sentence() -> None:
    playout = two_sentences()
    assert playout.sentences == [
        SpokenSentence(FIRST, start_ms=0.0, duration_ms=1000.0),
        SpokenSentence(SECOND, start_ms=1000.0, duration_ms=500.0),
    ]
    assert playout.audio_ms == 1500.0


@pytest.mark.parametrize(
    ("played_ms", "heard"),
    [
        (0.0, ""),
        (-50.0, ""),
        (249.0, ""),
        (250.0, "One"),
        (500.0, "One two"),
        (999.0, "One two three"),
        (1000.0, FIRST),
        (1250.0, f"{FIRST} Five"),
        (1500.0, f"{FIRST} {SECOND}"),
        (99_999.0, f"{FIRST} {SECOND}"),
    ],
)
def test_heard_text_from_reported_positions(played_ms: float, heard: str) -> None:
    playout = two_sentences()
    playout.report(played_ms)
    # The report wins over the clock, however late it is.
    assert playout.heard_text(now=T0 + 1000) == heard
    assert playout.finished(now=T0 + 1000) == (played_ms >= 1500)


@pytest.mark.parametrize(
    ("seconds_later", "heard"),
    [
        (0.0, ""),
        (0.5, "One two"),
        (0.8, "One two three"),
        (1.0, FIRST),
        (1.3, f"{FIRST} Five"),
        (60.0, f"{FIRST} {SECOND}"),
    ],
)
def test_heard_text_estimated_in_real_time(seconds_later: float, heard: str) -> None:
    playout = two_sentences()
    # Played in real time from the first chunk on, not from when later chunks arrived.
    assert playout.heard_ms(now=T0 + seconds_later) == pytest.approx(
        min(seconds_later * 1000, 1500.0)
    )
    assert playout.heard_text(now=T0 + seconds_later) == heard
    assert playout.finished(now=T0 + seconds_later) == (seconds_later >= 1.5)


def test_a_partial_sentence_is_cut_at_a_word() -> None:
    playout = Playout()
    playout.add_audio(0, "The quick brown fox jumps over the lazy dog", 900.0, now=T0)
    playout.report(450.0)  # half of nine words: four whole words heard
    assert playout.heard_text(now=T0) == "The quick brown fox"


def test_nothing_was_heard_before_any_audio() -> None:
    playout = Playout()
    assert playout.heard_ms(now=T0) == 0.0
    assert playout.heard_text(now=T0) == ""
    assert playout.finished(now=T0)


def test_a_later_report_moves_the_position_on() -> None:
    playout = two_sentences()
    playout.report(500.0)
    playout.report(1250.0)
    assert playout.heard_text(now=T0) == f"{FIRST} Five"
