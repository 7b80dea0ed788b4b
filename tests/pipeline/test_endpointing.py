"""The sans-I/O Endpointer: speech probabilities in, turn decisions out.

Chunks are 32 ms, so: min_speech 96 ms = 3 chunks, end-of-turn silence 500 ms = 16 silent chunks
(16 x 32 = 512 >= 500), speculative start 160 ms = 5 silent chunks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from voxgate.pipeline.endpointing import (
    Decision,
    Endpointer,
    EndpointerConfig,
    SpeechBegan,
    SpeechPaused,
    SpeechResumed,
    TurnEnded,
    TurnMaybeEnded,
)

CHUNK_MS = 32.0
SPEECH = 0.9
QUIET = 0.05
BREATH = 0.4
"""Above the in-speech release threshold (0.35), below the threshold (0.5)."""


def endpointer(**overrides: Any) -> Endpointer:
    config: dict[str, Any] = {
        "chunk_ms": CHUNK_MS,
        "threshold": 0.5,
        "min_speech_ms": 96,
        "end_of_turn_silence_ms": 500,
        "speculative_start_ms": None,
        "max_utterance_ms": 30_000,
    }
    config.update(overrides)
    return Endpointer(EndpointerConfig(**config))


def run(ep: Endpointer, probabilities: Iterable[float]) -> list[tuple[int, Decision]]:
    """Every decision with the index of the chunk that caused it (counting this run's chunks)."""
    return [(i, d) for i, p in enumerate(probabilities) for d in ep.feed(p)]


def seq(*parts: tuple[float, int]) -> list[float]:
    """``seq((SPEECH, 10), (QUIET, 20))``: 10 speech chunks then 20 quiet ones."""
    return [p for probability, count in parts for p in [probability] * count]


def test_speech_begins_once_it_lasted_min_speech() -> None:
    ep = endpointer()
    assert run(ep, seq((QUIET, 5), (SPEECH, 2))) == []
    assert not ep.in_speech
    assert ep.feed(SPEECH) == [SpeechBegan(first_chunk=5)]
    assert ep.in_speech
    assert ep.voiced_ms == 3 * CHUNK_MS


def test_a_click_shorter_than_min_speech_does_not_start() -> None:
    ep = endpointer()
    clicks = seq((SPEECH, 2), (QUIET, 1)) * 10  # never three voiced chunks in a row
    assert run(ep, clicks) == []
    assert not ep.in_speech
    assert ep.voiced_ms == 0.0


@pytest.mark.parametrize("min_speech_ms", [32, 96, 320])
def test_min_speech_is_counted_in_chunks(min_speech_ms: int) -> None:
    needed = int(min_speech_ms // CHUNK_MS)
    decisions = run(endpointer(min_speech_ms=min_speech_ms), seq((SPEECH, 20)))
    assert decisions == [(needed - 1, SpeechBegan(first_chunk=0))]


def test_turn_ends_after_the_end_of_turn_silence() -> None:
    ep = endpointer()
    decisions = run(ep, seq((QUIET, 2), (SPEECH, 10), (QUIET, 30)))
    last_voiced = 11
    assert decisions == [
        (4, SpeechBegan(first_chunk=2)),
        (last_voiced + 16, TurnEnded(last_voiced_chunk=last_voiced, forced=False)),
    ]
    assert not ep.in_speech


def test_a_pause_shorter_than_the_end_of_turn_silence_keeps_the_turn() -> None:
    decisions = run(endpointer(), seq((SPEECH, 10), (QUIET, 15), (SPEECH, 10), (QUIET, 20)))
    assert decisions == [(2, SpeechBegan(0)), (34 + 16, TurnEnded(34))]


def test_in_speech_a_weaker_chunk_still_counts_as_voiced() -> None:
    # Hysteresis: 0.4 does not start speech, but keeps it going.
    ep = endpointer()
    assert run(ep, seq((BREATH, 10))) == []
    decisions = run(ep, seq((SPEECH, 5), (BREATH, 10), (QUIET, 20)))
    assert decisions == [(2, SpeechBegan(10)), (14 + 16, TurnEnded(24))]


def test_speculative_pause_and_resume() -> None:
    ep = endpointer(speculative_start_ms=160)
    decisions = run(ep, seq((SPEECH, 10), (QUIET, 7), (SPEECH, 3), (QUIET, 30)))
    assert decisions == [
        (2, SpeechBegan(0)),
        (9 + 5, SpeechPaused(last_voiced_chunk=9)),
        (17, SpeechResumed()),
        (19 + 5, SpeechPaused(last_voiced_chunk=19)),
        (19 + 16, TurnEnded(19)),
    ]


def test_speculative_pause_is_not_repeated_during_one_silence() -> None:
    decisions = run(endpointer(speculative_start_ms=160), seq((SPEECH, 5), (QUIET, 40)))
    assert [type(d) for _, d in decisions] == [SpeechBegan, SpeechPaused, TurnEnded]


def test_after_a_pause_only_clear_speech_resumes() -> None:
    ep = endpointer(speculative_start_ms=160)
    decisions = run(ep, seq((SPEECH, 10), (QUIET, 5), (BREATH, 20)))
    # Breath noise after the pause neither resumes the turn nor delays its end.
    assert decisions == [(2, SpeechBegan(0)), (14, SpeechPaused(9)), (25, TurnEnded(9))]


def test_resume_needs_the_full_threshold() -> None:
    ep = endpointer(speculative_start_ms=160)
    run(ep, seq((SPEECH, 10), (QUIET, 5)))
    assert ep.feed(0.49) == []
    assert ep.feed(0.5) == [SpeechResumed()]
    # Back in speech: the release threshold applies again.
    assert ep.feed(BREATH) == []
    assert ep.voiced_ms == 12 * CHUNK_MS


def test_max_utterance_forces_an_end_and_speech_starts_again() -> None:
    ep = endpointer(max_utterance_ms=1000)
    decisions = run(ep, seq((SPEECH, 100)))
    # 32 chunks = 1024 ms >= 1000 ms; the next utterance needs min_speech again.
    assert decisions[:4] == [
        (2, SpeechBegan(0)),
        (31, TurnEnded(31, forced=True)),
        (34, SpeechBegan(32)),
        (63, TurnEnded(63, forced=True)),
    ]
    assert len(decisions) == 7
    assert all(d.forced for _, d in decisions if isinstance(d, TurnEnded))


def test_max_utterance_counts_pauses_too() -> None:
    ep = endpointer(max_utterance_ms=1000)
    decisions = run(ep, seq((SPEECH, 10), (QUIET, 10), (SPEECH, 12)))
    assert decisions == [(2, SpeechBegan(0)), (31, TurnEnded(31, forced=True))]


def test_commit_ends_the_turn_now() -> None:
    ep = endpointer()
    run(ep, seq((SPEECH, 10), (QUIET, 3)))
    assert ep.commit() == [TurnEnded(last_voiced_chunk=9, forced=True)]
    assert not ep.in_speech
    assert ep.voiced_ms == 0.0
    assert ep.commit() == []
    # Silence afterwards does not end the turn a second time.
    assert run(ep, seq((QUIET, 30))) == []


def test_commit_outside_speech_does_nothing() -> None:
    ep = endpointer()
    run(ep, seq((SPEECH, 2)))
    assert ep.commit() == []
    assert ep.feed(SPEECH) == [SpeechBegan(0)]


# --- with an end-of-turn model ---------------------------------------------------------------
# Asked after 192 ms = 6 silent chunks; fallback 1000 ms = 32 silent chunks (32 x 32 = 1024);
# the model needs 320 ms = 10 voiced chunks.


def with_model(**overrides: Any) -> Endpointer:
    config: dict[str, Any] = {
        "end_of_turn_check_ms": 192,
        "end_of_turn_threshold": 0.5,
        "end_of_turn_fallback_ms": 1000,
        "end_of_turn_min_speech_ms": 320,
    }
    config.update(overrides)
    return endpointer(**config)


def test_the_model_is_asked_once_after_the_check_silence() -> None:
    ep = with_model()
    decisions = run(ep, seq((SPEECH, 12), (QUIET, 20)))
    assert decisions == [(2, SpeechBegan(0)), (11 + 6, TurnMaybeEnded(last_voiced_chunk=11))]
    assert ep.in_speech  # nothing ends until the model answers or the fallback passes


def test_a_sure_answer_ends_the_turn_at_once() -> None:
    ep = with_model()
    run(ep, seq((SPEECH, 12), (QUIET, 6)))
    assert ep.end_of_turn_probability(11, 0.93) == [TurnEnded(11, forced=False)]
    assert not ep.in_speech
    assert run(ep, seq((QUIET, 40))) == []  # and nothing more comes of the silence


def test_an_unsure_answer_waits_for_the_fallback_not_the_fixed_silence() -> None:
    ep = with_model()
    run(ep, seq((SPEECH, 12), (QUIET, 6)))
    assert ep.end_of_turn_probability(11, 0.2) == []
    # 6 silent chunks so far; the fallback needs 32, the plain 500 ms would have ended at 16.
    decisions = run(ep, seq((QUIET, 30)))
    assert decisions == [(25, TurnEnded(11, forced=False))]


def test_the_threshold_is_inclusive_and_configurable() -> None:
    ep = with_model(end_of_turn_threshold=0.8)
    run(ep, seq((SPEECH, 12), (QUIET, 6)))
    assert ep.end_of_turn_probability(11, 0.79) == []
    assert ep.end_of_turn_probability(11, 0.8) == [TurnEnded(11)]


def test_a_pause_within_the_fallback_keeps_the_turn_and_asks_again() -> None:
    ep = with_model()
    decisions = run(ep, seq((SPEECH, 12), (QUIET, 25), (SPEECH, 5), (QUIET, 8)))
    assert decisions == [
        (2, SpeechBegan(0)),
        (17, TurnMaybeEnded(11)),
        (41 + 6, TurnMaybeEnded(41)),
    ]


def test_an_answer_about_an_older_pause_is_dropped() -> None:
    ep = with_model()
    run(ep, seq((SPEECH, 12), (QUIET, 6), (SPEECH, 3)))  # the user went on before it came
    assert ep.end_of_turn_probability(11, 0.99) == []
    assert ep.in_speech


def test_an_answer_after_the_turn_ended_is_dropped() -> None:
    ep = with_model()
    run(ep, seq((SPEECH, 12), (QUIET, 6)))
    assert ep.commit() == [TurnEnded(11, forced=True)]
    assert ep.end_of_turn_probability(11, 0.99) == []


def test_a_short_utterance_is_not_given_to_the_model() -> None:
    # 5 voiced chunks = 160 ms < 320 ms: the fixed 500 ms silence ends it, no question asked.
    decisions = run(with_model(), seq((SPEECH, 5), (QUIET, 40)))
    assert decisions == [(2, SpeechBegan(0)), (4 + 16, TurnEnded(4))]


def test_the_fallback_is_never_shorter_than_the_fixed_silence() -> None:
    ep = with_model(end_of_turn_silence_ms=1280, end_of_turn_fallback_ms=600)  # e.g. ElatoAI
    run(ep, seq((SPEECH, 12), (QUIET, 6)))
    assert ep.end_of_turn_probability(11, 0.1) == []
    # The 40th silent chunk (1280 ms) ends it: 6 were fed before, this run starts at the 7th.
    assert run(ep, seq((QUIET, 40))) == [(40 - 7, TurnEnded(11))]


def test_the_model_answer_commits_the_speculative_reply() -> None:
    ep = with_model(speculative_start_ms=64)
    decisions = run(ep, seq((SPEECH, 12), (QUIET, 6)))
    assert decisions == [(2, SpeechBegan(0)), (13, SpeechPaused(11)), (17, TurnMaybeEnded(11))]
    # An ordinary (not forced) end: the session keeps the reply it started at 64 ms.
    assert ep.end_of_turn_probability(11, 0.9) == [TurnEnded(11, forced=False)]


def test_resuming_after_an_unsure_answer_voids_the_speculative_reply_as_before() -> None:
    ep = with_model(speculative_start_ms=64)
    run(ep, seq((SPEECH, 12), (QUIET, 6)))
    assert ep.end_of_turn_probability(11, 0.1) == []
    assert run(ep, seq((QUIET, 4), (SPEECH, 1))) == [(4, SpeechResumed())]


def test_without_a_model_nothing_is_asked() -> None:
    decisions = run(endpointer(), seq((SPEECH, 12), (QUIET, 40)))
    assert decisions == [(2, SpeechBegan(0)), (11 + 16, TurnEnded(11))]
