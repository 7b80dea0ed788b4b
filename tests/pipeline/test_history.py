"""The history window: at most max_turns exchanges, dropped in blocks so the prompt's prefix (and
so the LLM's KV cache) stays the same from turn to turn between drops."""

from __future__ import annotations

from voxgate.pipeline.history import Conversation, Exchange


def conversation(turns: int, max_turns: int) -> Conversation:
    history = Conversation(max_turns)
    for i in range(turns):
        history.record(Exchange(f"q{i}", f"a{i}"))
    return history


def users(history: Conversation) -> list[str]:
    return [m.content for m in history.messages("system") if m.role == "user"]


def test_short_histories_are_whole() -> None:
    assert users(conversation(4, 4)) == ["q0", "q1", "q2", "q3"]


def test_the_window_never_exceeds_max_turns_and_keeps_the_newest() -> None:
    for turns in range(30):
        kept = users(conversation(turns, 6))
        assert len(kept) <= 6
        assert kept == [f"q{i}" for i in range(turns - len(kept), turns)]
        assert turns <= 6 or len(kept) >= 4  # never less than half the window (+1) is dropped


def test_the_prompt_start_moves_in_blocks_not_every_turn() -> None:
    starts = [conversation(turns, 6).window_start() for turns in range(6, 20)]
    # A prefix that moves every turn would change at each step: here it changes every 3 turns.
    assert starts == [0, 3, 3, 3, 6, 6, 6, 9, 9, 9, 12, 12, 12, 15]


def test_no_history_kept_when_max_turns_is_zero() -> None:
    history = conversation(3, 0)
    assert [m.role for m in history.messages("system", "now")] == ["system", "user"]
