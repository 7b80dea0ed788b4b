"""Typed turn detection in the cascade: ServerVAD's silence and threshold, ClientCommit."""

from __future__ import annotations

from tests.fakes import (
    SYSTEM_PROMPT,
    EventLog,
    Fakes,
    bounded,
    concat,
    feed,
    silence,
    tone,
)
from voxgate.core.config import CharacterSettings, TurnSettings
from voxgate.core.events import SpeechStarted, SpeechStopped, TurnDone
from voxgate.core.turns import ClientCommit, ServerVAD, TurnDetection
from voxgate.pipeline.session import TurnSession


def session(fakes: Fakes, detection: TurnDetection | None) -> TurnSession:
    return TurnSession(
        fakes.engines(),
        TurnSettings(end_of_turn_silence_ms=500),
        CharacterSettings(system_prompt=SYSTEM_PROMPT),
        detection=detection,
    )


@bounded(10)
async def test_the_threshold_decides_what_counts_as_speech() -> None:
    """FakeVAD scores a tone 0.9: speech at threshold 0.5, not at 0.95."""
    fakes = Fakes()
    heard, deaf = session(fakes, ServerVAD(500, 0.5)), session(fakes, ServerVAD(500, 0.95))
    try:
        logs = EventLog(heard), EventLog(deaf)
        for each in (heard, deaf):
            await feed(each, concat(tone(600), silence(700)))
        await logs[0].wait_for_event(TurnDone)
        assert logs[0].of(SpeechStarted)
        assert logs[1].of(SpeechStarted) == [] and logs[1].of(TurnDone) == []
    finally:
        await heard.close()
        await deaf.close()


@bounded(10)
async def test_server_vad_silence_is_the_one_asked_for() -> None:
    """The session's own ServerVAD overrides ``turn.end_of_turn_silence_ms`` (500 here)."""
    fakes = Fakes()
    short, long = session(fakes, ServerVAD(300)), session(fakes, ServerVAD(1200))
    try:
        logs = EventLog(short), EventLog(long)
        for each in (short, long):
            await feed(each, concat(tone(600), silence(800)))
        await logs[0].wait_for_event(SpeechStopped)
        assert logs[1].of(SpeechStopped) == []  # 800 ms < 1200 ms
        await feed(long, silence(600))
        await logs[1].wait_for_event(SpeechStopped)
    finally:
        await short.close()
        await long.close()


@bounded(10)
async def test_with_client_commits_silence_never_ends_the_turn() -> None:
    fakes = Fakes()
    committed = session(fakes, ClientCommit())
    try:
        log = EventLog(committed)
        await feed(committed, concat(tone(600), silence(3000)))
        await log.wait_for_event(SpeechStarted)
        assert log.of(SpeechStopped) == []
        assert committed.commit_turn()
        done = await log.wait_for_event(TurnDone)
        assert done.timings.speculative is False  # nothing starts before the commit
    finally:
        await committed.close()


async def test_default_detection_is_server_vad_on_the_turn_settings() -> None:
    default = session(Fakes(), None)
    assert default.detection == ServerVAD(500, 0.5)
    await default.close()
