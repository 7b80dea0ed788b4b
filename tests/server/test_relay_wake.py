"""Hands-free over the relay: a session in ``wake_word`` listening mode (protocol 1.1), with the
real wake-word engine, on a real socket, checked in the store itself (the SQLite file).

The wake word and the speech without it are real audio: flite says "Hey Jarvis, ..." (made at test
time), LibriVox clips from pocketsphinx-testdata are the talk in the room. The STT, LLM and TTS are
fakes here, so that each call they get is counted (the privacy promise: none before the word);
the last test runs the real models end to end.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.fakes import Fakes, bounded
from tests.server.test_relay_session import Server, SpecClient, client, names, speak
from tests.server_harness import open_store, running_server, server_settings
from voxgate.client import RelayClientError, converse
from voxgate.core.audio import read_wav
from voxgate.core.capabilities import Int16Array, WakeWord
from voxgate.core.config import CharacterSettings, ListeningSettings, Settings
from voxgate.evaluation import normalize_words
from voxgate.models import ModelStore
from voxgate.pipeline import Engines
from voxgate.providers.micro_wakeword import MicroWakeWordSettings, create
from voxgate.speech_corpus import INSTALL_HINT, librivox_clips, synthesized

RATE_HZ = 16_000
WAKE = {"mode": "wake_word", "wake_word": "hey_jarvis"}


@pytest.fixture(scope="module")
def wake_engine(tmp_path_factory: pytest.TempPathFactory) -> WakeWord:
    return create(MicroWakeWordSettings(), ModelStore(tmp_path_factory.mktemp("models")))


def said(text: str, voice: str = "rms") -> Int16Array:
    try:
        return synthesized(text, "flite", voice)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def room_talk(seconds: float) -> Int16Array:
    """Real speech without the wake word: LibriVox clips back to back."""
    clips = librivox_clips()
    if not clips:
        pytest.skip(INSTALL_HINT)
    audio = np.concatenate([read_wav(clip.path)[0] for clip in clips])
    return np.resize(audio, int(seconds * RATE_HZ)).astype(np.int16)


def silence(seconds: float) -> Int16Array:
    return np.zeros(int(seconds * RATE_HZ), np.int16)


def rows(data_dir: Path) -> dict[str, int]:
    """Rows of what a conversation leaves, counted in the database file itself."""
    with sqlite3.connect(data_dir / "voxgate.db") as db:
        return {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("conversations", "messages", "usage", "errors")
        }


@asynccontextmanager
async def serve_wake(
    tmp_path: Path,
    wake_engine: WakeWord,
    fakes: Fakes | None = None,
    character: CharacterSettings | None = None,
    **listening: Any,
) -> AsyncIterator[Server]:
    fakes = fakes or Fakes()
    engines = fakes.engines()
    engines.wake_word = wake_engine
    store = await open_store(tmp_path)
    _, token = await store.devices.add("kitchen")
    update: dict[str, Any] = {"listening": ListeningSettings(**listening)}
    if character is not None:
        update["character"] = character
    settings = server_settings(tmp_path).model_copy(update=update)
    try:
        async with running_server(settings, engines, store) as address:
            yield Server(address, token, store, fakes)
    finally:
        engines.close()
        await store.close()


async def quiet(c: SpecClient, timeout_s: float = 1.0) -> list[dict[str, Any]]:
    """Whatever the server says within ``timeout_s`` (nothing, for a waiting session)."""
    seen = []
    try:
        while True:
            seen.append(await c.next(timeout_s))
    except TimeoutError:
        return seen


@bounded(90)
async def test_nothing_is_transcribed_stored_or_billed_before_the_wake_word(
    tmp_path: Path, wake_engine: WakeWord
) -> None:
    async with (
        serve_wake(tmp_path, wake_engine) as server,
        client(server.url, server.token) as c,
    ):
        ready = await c.start(listening={**WAKE, "follow_up": "turn"})
        assert ready["protocol_version"] == "1.1" and ready["greeting"] is False
        assert ready["listening"] == {
            "mode": "wake_word",
            "wake_word": "hey_jarvis",
            "follow_up": "turn",
            "silence_s": 8.0,
            "state": "waiting",
        }
        await speak(c, room_talk(20))  # twenty seconds of people talking
        assert await quiet(c) == []
        await server.store.writer.flush()
        assert server.fakes.stt.calls == [] and server.fakes.llm.calls == []
        assert rows(tmp_path) == {"conversations": 0, "messages": 0, "usage": 0, "errors": 0}

        # After a pause, as people do before addressing someone.
        hey_jarvis = said("Hey Jarvis, what is two plus three?")
        await speak(c, np.concatenate([silence(1), hey_jarvis, silence(2)]))
        turn = await c.until("wake.waiting", timeout_s=20)
        events = names(turn)
        assert events[0] == "wake.detected"
        assert turn[0]["payload"]["wake_word"] == "hey_jarvis"
        # On the session's clock: 20 s of talk, 1 s of pause, then "Hey Jarvis" (~0.8 s).
        assert 21_500 < turn[0]["payload"]["at_ms"] < 23_000, turn[0]
        assert events.index("speech.started") < events.index("turn.done") < len(events) - 1
        assert turn[-1]["payload"] == {"reason": "turn_done", "state": "waiting"}
        calls = len(server.fakes.stt.calls)
        # The question (with the word's tail, the pre-roll), never the twenty seconds before;
        # more than one call: a reply speculatively begun at a pause is begun again.
        assert calls and all(len(a) / RATE_HZ < 4.0 for a in server.fakes.stt.calls)

        await speak(c, room_talk(10))  # waiting again: nothing more is heard
        assert [m for m in await quiet(c) if m["event"] != "tts.audio"] == []
        await server.store.writer.flush()
        assert len(server.fakes.stt.calls) == calls
        heard = 'voxgate_wake_words_total{protocol="relay",wake_word="hey_jarvis"}'
        async with httpx.AsyncClient(base_url=f"http://{server.address}") as http:
            assert f"{heard} 1.0" in (await http.get("/metrics")).text
        assert rows(tmp_path) == {"conversations": 1, "messages": 2, "usage": 0, "errors": 0}


@bounded(90)
async def test_a_conversation_waits_again_after_the_silence_timeout(
    tmp_path: Path, wake_engine: WakeWord
) -> None:
    async with (
        serve_wake(tmp_path, wake_engine) as server,
        client(server.url, server.token) as c,
    ):
        ready = await c.start(listening={**WAKE, "silence_s": 2})
        assert ready["listening"]["follow_up"] == "conversation"
        await speak(c, np.concatenate([said("Hey Jarvis, what is two plus three?"), silence(1)]))
        await c.until("turn.done", timeout_s=20)
        # A second question without the word: the conversation is still open.
        await speak(c, np.concatenate([said("And four plus four?"), silence(1)]))
        second = await c.until("turn.done", timeout_s=20)
        assert "wake.waiting" not in names(second)
        await speak(c, silence(2.5))
        waiting = await c.until("wake.waiting", timeout_s=10)
        assert waiting[-1]["payload"] == {"reason": "silence", "state": "waiting"}
        calls = len(server.fakes.stt.calls)
        await speak(c, np.concatenate([said("And six plus six?"), silence(1)]))
        assert [m["event"] for m in await quiet(c)] == []
        assert len(server.fakes.stt.calls) == calls


@bounded(30)
async def test_an_unknown_wake_word_is_refused_naming_the_installed_ones(
    tmp_path: Path, wake_engine: WakeWord
) -> None:
    async with (
        serve_wake(tmp_path, wake_engine) as server,
        client(server.url, server.token) as c,
    ):
        await c.send("session.start", {"listening": {"mode": "wake_word", "wake_word": "siri"}})
        code = await c.close_code()
    assert code == 4400
    (error,) = c.received
    message = error["payload"]["message"]
    assert "'siri'" in message and "alexa, hey_jarvis, hey_mycroft, okay_nabu" in message


@bounded(30)
async def test_old_clients_hear_everything_unless_the_server_is_set_to_wake_words(
    tmp_path: Path, wake_engine: WakeWord
) -> None:
    async with (
        serve_wake(tmp_path, wake_engine) as server,
        client(server.url, server.token) as c,
    ):
        ready = await c.start()
        assert ready["listening"] == {"mode": "push_to_talk"} and ready["greeting"] is True
    async with (
        serve_wake(tmp_path / "b", wake_engine, mode="wake_word") as server,
        client(server.url, server.token) as c,
    ):
        ready = await c.start()
        assert ready["listening"]["mode"] == "wake_word"
        assert ready["listening"]["wake_word"] == "hey_jarvis"


@bounded(30)
async def test_the_word_is_the_clients_else_the_devices_else_the_characters(
    tmp_path: Path, wake_engine: WakeWord
) -> None:
    character = CharacterSettings(wake_word="alexa")
    async with serve_wake(tmp_path, wake_engine, character=character) as server:
        async with client(server.url, server.token) as c:
            assert (await c.start(listening=WAKE))["listening"]["wake_word"] == "hey_jarvis"
        async with client(server.url, server.token) as c:
            ready = await c.start(listening={"mode": "wake_word"})
            assert ready["listening"]["wake_word"] == "alexa"
    kitchen = {"kitchen": "okay_nabu"}
    async with (
        serve_wake(
            tmp_path / "b", wake_engine, character=character, device_wake_words=kitchen
        ) as server,
        client(server.url, server.token) as c,
    ):
        ready = await c.start(listening={"mode": "wake_word"})
        assert ready["listening"]["wake_word"] == "okay_nabu"


@pytest.mark.models
@bounded(240)
async def test_hey_jarvis_what_is_two_plus_three_is_answered_with_the_real_models(
    tmp_path: Path, real_engines: Engines, real_settings: Settings
) -> None:
    settings = real_settings.model_copy(update={"data_dir": tmp_path})
    store = await open_store(tmp_path)
    _, token = await store.devices.add("kitchen")
    question = np.concatenate(
        [room_talk(6), silence(1), said("Hey Jarvis, what is two plus three?"), silence(2)]
    )
    async with (
        running_server(settings, real_engines, store) as address,
        client(f"ws://{address}/v1/relay", token) as c,
    ):
        await c.start(listening={**WAKE, "follow_up": "turn"})
        sender = asyncio.create_task(speak_in_real_time(c, question))
        turn = await c.until("wake.waiting", timeout_s=180)
        await sender
    await store.close()
    events = names(turn)
    assert events[0] == "wake.detected", events
    final = next(m for m in turn if m["event"] == "asr.final")["payload"]["text"]
    assert {"two", "plus", "three"} <= set(normalize_words(final)) or "2" in final, final
    done = next(m for m in turn if m["event"] == "turn.done")["payload"]
    assert "five" in normalize_words(done["reply_text"]) or "5" in done["reply_text"], done
    assert "tts.audio" in events
    assert rows(tmp_path)["messages"] == 2


async def speak_in_real_time(c: SpecClient, samples: Int16Array) -> None:
    frame = RATE_HZ // 50
    for offset in range(0, len(samples), frame):
        await c.ws.send(samples[offset : offset + frame].astype("<i2").tobytes())
        await asyncio.sleep(0.02)


@bounded(60)
async def test_the_reference_client_talks_hands_free(tmp_path: Path, wake_engine: WakeWord) -> None:
    question = np.concatenate([silence(1), said("Hey Jarvis, what is two plus three?")])
    async with serve_wake(tmp_path, wake_engine) as server:
        result = await converse(
            server.url,
            question,
            RATE_HZ,
            token=server.token,
            realtime=False,
            wake_word="hey_jarvis",
        )
        assert result.turn_done and result.events.index("wake.detected") < result.events.index(
            "speech.started"
        )
        with pytest.raises(RelayClientError, match="did not hear the wake word 'hey_jarvis'"):
            await converse(
                server.url,
                room_talk(5),
                RATE_HZ,
                token=server.token,
                realtime=False,
                wake_word="hey_jarvis",
            )
