"""Known conversations, usage and errors written into a store, for the CLI and admin API tests."""

from __future__ import annotations

import datetime as dt

from voxgate.core.usage import EngineUsage
from voxgate.store import Store
from voxgate.store.writer import ConversationOpened, ErrorRecord, TurnRecord


def at(day: str, hour: int = 12) -> float:
    """Epoch seconds of ``day`` (YYYY-MM-DD, UTC) at ``hour``."""
    return dt.datetime.fromisoformat(day).replace(hour=hour, tzinfo=dt.UTC).timestamp()


def turn_usage(cost_usd: float) -> tuple[EngineUsage, ...]:
    """One turn: 6 s of speech heard, 100 tokens in / 20 out, 30 characters spoken in 3 s."""
    return (
        EngineUsage("stt", "faster-whisper", "whisper-tiny-en", audio_s=6.0, compute_s=0.1),
        EngineUsage(
            "llm", "openai", "gpt-4o-mini", tokens_in=100, tokens_out=20, cost_usd=cost_usd
        ),
        EngineUsage("tts", "piper", "joe", characters=30, audio_s=3.0, compute_s=0.2),
    )


async def seed(store: Store, *, days: tuple[str, str] = ("2025-01-10", "2025-01-11")) -> None:
    """User ann's device ``toy`` talks to the ``toy`` character: one turn on the first day; on
    the second, a turn cut short by the user and a turn that failed. Device ``desk`` (no user)
    has one turn on the second day. Errors: ``no_speech`` (desk), then ``llm_failed`` (toy). Costs: 0.001 USD per turn."""
    ann = await store.users.add("ann")
    toy, _ = await store.devices.add("toy", user="ann")
    desk, _ = await store.devices.add("desk")
    character_id = await store.characters.id_of("toy")
    first, second = days
    writer = store.writer
    writer.start()
    writer.submit(
        ConversationOpened("conv-toy", toy.id, ann.id, character_id, resumed=False, at=at(first, 9))
    )
    writer.submit(
        TurnRecord(
            "conv-toy", toy.id, ann.id, 1, "What is the capital of France?",
            "Paris is the capital of France.", None, False,
            {"speech_end_to_first_audio_ms": 812.4, "stt_ms": 120.0},
            turn_usage(0.001), at=at(first, 10),
        )
    )  # fmt: skip
    writer.submit(
        TurnRecord(
            "conv-toy", toy.id, ann.id, 2, "Tell me a [long] story",
            "Once upon a time there was a dragon who loved tea.", "Once upon a time", True,
            {"turn_end_to_first_audio_ms": 640.0},
            turn_usage(0.001), at=at(second, 10),
        )
    )  # fmt: skip
    writer.submit(ErrorRecord(toy.id, "conv-toy", "llm_failed", "model crashed", at=at(second, 11)))
    writer.submit(ConversationOpened("conv-desk", desk.id, None, None, False, at=at(second, 8)))
    writer.submit(ErrorRecord(desk.id, "conv-desk", "no_speech", "nothing heard", at=at(second, 9)))
    writer.submit(
        TurnRecord(
            "conv-desk", desk.id, None, 1, "Hello", "Hi there.", None, False,
            {"speech_end_to_first_audio_ms": 700.0}, turn_usage(0.001), at=at(second, 9),
        )
    )  # fmt: skip
    assert await writer.flush(10) and writer.healthy
