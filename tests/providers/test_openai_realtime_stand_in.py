"""RealtimeSession (OpenAI Realtime speech-to-speech) against a local stand-in server.

The stand-in is a real WebSocket server on loopback that speaks the Realtime API's GA event set:
it checks the bearer key at the handshake, takes ``session.update``, decodes the appended 24 kHz
PCM and runs its own energy VAD on it (``input_audio_buffer.speech_started``/``speech_stopped``,
``committed``), transcribes every utterance as :data:`TRANSCRIPT`, and answers with a 330 Hz sine at
24 kHz (``response.output_audio.delta``), its transcript and ``response.done`` with usage. The
scenario is the first path segment of the base URL: ``ws://127.0.0.1:PORT/<scenario>/v1``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.fakes import Fakes, concat, pcm_bytes, silence
from tests.server_harness import open_store, running_server, server_settings
from voxgate.core.audio import read_wav
from voxgate.core.capabilities import Int16Array
from voxgate.core.config import CharacterSettings, Price, TurnSettings
from voxgate.core.errors import ErrorCode
from voxgate.core.events import (
    ErrorEvent,
    Event,
    Interrupted,
    ReplyAudio,
    ReplyStarted,
    ReplyTextDelta,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    TurnDone,
)
from voxgate.core.turns import ClientCommit, ServerVAD
from voxgate.pipeline.history import Exchange
from voxgate.pipeline.realtime_session import RealtimeSession
from voxgate.providers import openai_realtime as wire
from voxgate.providers.openai_realtime import OpenAIRealtimeSettings

API_KEY = "sk-test-realtime-5c1f9e27"
RATE = 24_000
TRANSCRIPT = "What is the capital of France?"
REPLY_TEXT = "Paris is the capital of France and a lovely city."
REPLY_MS = 1000
REPLY_HZ = 330.0
DELTA_SAMPLES = 4_800
USAGE = {"text_in": 25, "audio_in": 180, "text_out": 12, "audio_out": 240}
PRICES = {
    "openai-realtime/gpt-realtime": Price(per_million_tokens_in=4.0, per_million_tokens_out=16.0),
    "openai-realtime/gpt-realtime:audio": Price(
        per_million_tokens_in=32.0, per_million_tokens_out=64.0
    ),
    "openai/gpt-4o-mini-transcribe": Price(per_audio_minute=0.003),
}
CHARACTER = CharacterSettings(system_prompt="You are Vox. Answer in one short sentence.")
SPEECH_RMS = 1_000
FRAME = 480  # the stand-in's VAD frames: 20 ms at 24 kHz
SILENCE_FRAMES = 15  # 300 ms of silence ends a turn

quiet = logging.getLogger("tests.realtime_stand_in")
quiet.setLevel(logging.WARNING)  # websockets would log the request's headers (the key) at DEBUG


def sine(ms: float, hz: float, rate: int, amplitude: float = 0.3) -> Int16Array:
    t = np.arange(round(rate * ms / 1000)) / rate
    return (np.sin(2 * np.pi * hz * t) * amplitude * 32767).astype(np.int16)


def dominant_hz(samples: Int16Array, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def clip(hz: float = 440.0, rate: int = 16_000) -> Int16Array:
    """300 ms of silence, 800 ms of "speech", 600 ms of silence."""
    return concat(silence(300, rate), sine(800, hz, rate), silence(600, rate))


# ---------------------------------------------------------------------------------------------
# The stand-in


@dataclass
class Upstream:
    """What the stand-in saw on one connection."""

    path: str
    headers: dict[str, str]
    scenario: str
    session: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    responses: int = 0
    utterances: int = 0
    # the stand-in's VAD
    analysed: int = 0
    in_speech: bool = False
    quiet_frames: int = 0
    speech_end_ms: float = 0.0

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == kind]

    @property
    def samples(self) -> Int16Array:
        return np.frombuffer(bytes(self.audio), dtype="<i2")


class RealtimeStandIn:
    def __init__(self) -> None:
        self.upstreams: list[Upstream] = []
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await serve(
            self._serve, "127.0.0.1", 0, process_request=self._check, logger=quiet
        )

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def base_url(self, scenario: str) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/{scenario}/v1"

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            # OpenAI's own answer quotes the key it refused.
            got = request.headers.get("Authorization", "").removeprefix("Bearer ")
            body = {"error": {"message": f"Incorrect API key provided: {got}.", "code": None}}
            return connection.respond(HTTPStatus.UNAUTHORIZED, json.dumps(body))
        return None

    async def _serve(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        up = Upstream(
            request.path,
            {name.lower(): value for name, value in request.headers.raw_items()},
            request.path.split("/")[1],
        )
        self.upstreams.append(up)
        await self._send(ws, "session.created", session={"type": "realtime", "id": "sess_1"})
        try:
            async for message in ws:
                event = json.loads(message)
                up.events.append(event)
                await self._on(ws, up, event)
        except ConnectionClosed:
            pass  # the "drop" scenario cut it

    async def _on(self, ws: ServerConnection, up: Upstream, event: dict[str, Any]) -> None:
        match event["type"]:
            case "session.update":
                up.session = event["session"]
                await self._send(ws, "session.updated", session=event["session"])
                if up.scenario == "error":
                    await ws.send("this is not JSON")
                    error = {
                        "type": "invalid_request_error",
                        "code": "invalid_value",
                        "message": f"Invalid voice for key {API_KEY}",
                        "param": "session.audio.output.voice",
                        "event_id": None,
                    }
                    await self._send(ws, "error", error=error)
            case "input_audio_buffer.append":
                up.audio += base64.b64decode(event["audio"])
                await self._vad(ws, up)
            case "input_audio_buffer.commit":
                up.in_speech = False
                await self._commit(ws, up)
            case "response.create":
                metadata = event["response"].get("metadata")
                self._spawn(self._respond(ws, up, metadata))
            case "response.cancel":
                up.cancelled.set()
            case "conversation.item.truncate":
                await self._send(
                    ws,
                    "conversation.item.truncated",
                    item_id=event["item_id"],
                    content_index=0,
                    audio_end_ms=event["audio_end_ms"],
                )

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, ws: ServerConnection, kind: str, **fields: Any) -> None:
        await ws.send(json.dumps({"type": kind, "event_id": f"event_{id(fields)}", **fields}))

    async def _vad(self, ws: ServerConnection, up: Upstream) -> None:
        if up.session["audio"]["input"]["turn_detection"] is None:
            return  # turn_detection null: no server VAD, the client commits
        samples = up.samples
        while up.analysed + FRAME <= len(samples):
            frame = samples[up.analysed : up.analysed + FRAME].astype(np.float64)
            start_ms = up.analysed / RATE * 1000
            up.analysed += FRAME
            voiced = np.sqrt(np.mean(frame**2)) > SPEECH_RMS
            if voiced:
                up.quiet_frames = 0
                up.speech_end_ms = start_ms + 20
                if not up.in_speech:
                    up.in_speech = True
                    up.utterances += 1
                    await self._send(
                        ws,
                        "input_audio_buffer.speech_started",
                        audio_start_ms=int(start_ms),
                        item_id=f"item_u{up.utterances}",
                    )
            elif up.in_speech:
                up.quiet_frames += 1
                if up.quiet_frames >= SILENCE_FRAMES:
                    up.in_speech = False
                    await self._send(
                        ws,
                        "input_audio_buffer.speech_stopped",
                        audio_end_ms=int(up.speech_end_ms),
                        item_id=f"item_u{up.utterances}",
                    )
                    await self._commit(ws, up)
                    turn_detection = up.session["audio"]["input"]["turn_detection"]
                    if turn_detection["create_response"]:
                        self._spawn(self._respond(ws, up, None))

    async def _commit(self, ws: ServerConnection, up: Upstream) -> None:
        item = f"item_u{up.utterances}"
        await self._send(ws, "input_audio_buffer.committed", item_id=item, previous_item_id=None)
        if up.scenario in ("late-transcript", "no-transcript"):
            if up.scenario == "late-transcript":
                self._spawn(self._transcribe(ws, item, delay_s=0.3))
            return
        await self._transcribe(ws, item)

    async def _transcribe(self, ws: ServerConnection, item: str, delay_s: float = 0.0) -> None:
        await asyncio.sleep(delay_s)
        common = {"item_id": item, "content_index": 0}
        kind = "conversation.item.input_audio_transcription"
        await self._send(ws, f"{kind}.delta", delta="What is the ", **common)
        await self._send(ws, f"{kind}.completed", transcript=TRANSCRIPT, **common)

    async def _respond(
        self, ws: ServerConnection, up: Upstream, metadata: dict[str, str] | None
    ) -> None:
        up.responses += 1
        n = up.responses
        response_id, item_id = f"resp_{n}", f"item_a{n}"
        up.cancelled.clear()
        response: dict[str, Any] = {"object": "realtime.response", "id": response_id}
        await self._send(
            ws,
            "response.created",
            response={**response, "status": "in_progress", "metadata": metadata},
        )
        fields = {"response_id": response_id, "item_id": item_id, "output_index": 0}
        fields["content_index"] = 0
        hold = up.scenario == "hold" and n == 1
        words = REPLY_TEXT.split(" ")
        if hold:  # the whole transcript first, then audio until cancelled
            for i, word in enumerate(words):
                delta = word if i == 0 else f" {word}"
                await self._send(
                    ws, "response.output_audio_transcript.delta", delta=delta, **fields
                )
        audio = sine(REPLY_MS, REPLY_HZ, RATE)
        status = "completed"
        for i, offset in enumerate(range(0, len(audio), DELTA_SAMPLES)):
            delta = base64.b64encode(pcm_bytes(audio[offset : offset + DELTA_SAMPLES])).decode()
            await self._send(ws, "response.output_audio.delta", delta=delta, **fields)
            if up.scenario == "drop":
                ws.transport.abort()
                return
            if not hold:
                text = " ".join(words[i * 2 : i * 2 + 2])
                await self._send(
                    ws,
                    "response.output_audio_transcript.delta",
                    delta=text if i == 0 else f" {text}",
                    **fields,
                )
            if hold and i == 1:
                await asyncio.wait_for(up.cancelled.wait(), 5)
            if up.cancelled.is_set():
                status = "cancelled"
                break
        await self._send(ws, "response.output_audio.done", **fields)
        await self._send(
            ws, "response.output_audio_transcript.done", transcript=REPLY_TEXT, **fields
        )
        usage = {
            "total_tokens": sum(USAGE.values()),
            "input_tokens": USAGE["text_in"] + USAGE["audio_in"],
            "output_tokens": USAGE["text_out"] + USAGE["audio_out"],
            "input_token_details": {
                "text_tokens": USAGE["text_in"],
                "audio_tokens": USAGE["audio_in"],
                "cached_tokens": 0,
            },
            "output_token_details": {
                "text_tokens": USAGE["text_out"],
                "audio_tokens": USAGE["audio_out"],
            },
        }
        details = (
            {"type": "cancelled", "reason": "client_cancelled"} if status != "completed" else None
        )
        await self._send(
            ws,
            "response.done",
            response={
                **response,
                "status": status,
                "status_details": details,
                "metadata": metadata,
                "usage": usage,
            },
        )


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
async def stand_in() -> AsyncIterator[RealtimeStandIn]:
    server = RealtimeStandIn()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(autouse=True)
def _key_never_logged(caplog: pytest.LogCaptureFixture) -> Any:
    """Every test runs with DEBUG logging; none may log the API key."""
    caplog.set_level(logging.DEBUG)
    yield
    records = [*caplog.get_records("setup"), *caplog.get_records("call")]
    logged = [record.getMessage() for record in records if record.name != quiet.name]
    assert logging.getLogger("voxgate").isEnabledFor(logging.DEBUG)
    assert not [line for line in logged if API_KEY in line]


def settings(base_url: str, key: str = API_KEY, **overrides: Any) -> OpenAIRealtimeSettings:
    return OpenAIRealtimeSettings(base_url=base_url, api_key=SecretStr(key), **overrides)


def open_session(
    base_url: str, *, output_rate_hz: int = 16_000, key: str = API_KEY, **kwargs: Any
) -> RealtimeSession:
    return RealtimeSession(
        settings(base_url, key, transcript_wait_s=kwargs.pop("transcript_wait_s", 3.0)),
        kwargs.pop("turn", TurnSettings()),
        kwargs.pop("character", CHARACTER),
        output_rate_hz=output_rate_hz,
        prices=PRICES,
        **kwargs,
    )


async def feed(session: RealtimeSession, samples: Int16Array, rate: int = 16_000) -> None:
    frame = rate // 50
    for offset in range(0, len(samples), frame):
        await session.push_audio(pcm_bytes(samples[offset : offset + frame]), rate)
        await asyncio.sleep(0)


async def collect_until(
    session: RealtimeSession, done: Any, events: list[Event] | None = None, timeout_s: float = 10
) -> list[Event]:
    """Events until ``done(event)`` is true (that event included) or the session ends."""
    events = [] if events is None else events
    async with asyncio.timeout(timeout_s):
        while (event := await session.next_event()) is not None:
            events.append(event)
            if done(event):
                break
    return events


def reply_samples(events: list[Event], turn_id: int) -> Int16Array:
    chunks = [e.pcm for e in events if isinstance(e, ReplyAudio) and e.turn_id == turn_id]
    return np.frombuffer(b"".join(chunks), dtype="<i2")


def turn_done(turn_id: int) -> Any:
    return lambda e: isinstance(e, TurnDone) and e.turn_id == turn_id


def assert_no_key(events: list[Event]) -> None:
    assert API_KEY not in repr(events)


# ---------------------------------------------------------------------------------------------
# Tests


async def test_spoken_turn_stand_in(stand_in: RealtimeStandIn) -> None:
    session = open_session(stand_in.base_url("ok"), output_rate_hz=16_000)
    spoken = clip(440.0, 16_000)
    await feed(session, spoken)
    events = await collect_until(session, turn_done(1))
    await session.close()

    up = stand_in.upstreams[0]
    # The handshake and the session's set-up.
    assert up.path == "/ok/v1/realtime?model=gpt-realtime"
    assert up.headers["authorization"] == f"Bearer {API_KEY}"
    assert "openai-beta" not in up.headers  # the GA event set
    assert up.session["type"] == "realtime"
    assert up.session["instructions"] == CHARACTER.system_prompt
    assert up.session["output_modalities"] == ["audio"]
    audio = up.session["audio"]
    assert audio["input"]["format"] == {"type": "audio/pcm", "rate": 24_000}
    assert audio["output"] == {"format": {"type": "audio/pcm", "rate": 24_000}, "voice": "marin"}
    assert audio["input"]["turn_detection"]["type"] == "server_vad"
    assert audio["input"]["turn_detection"]["interrupt_response"] is False
    assert audio["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    # What went up is the clip at 24 kHz: its length, its pitch, its loudness.
    received = up.samples
    expected = len(spoken) * 24_000 // 16_000
    assert expected - 24 * 40 <= len(received) <= expected  # the resampler holds back a little
    voiced = received[int(0.35 * RATE) : int(1.05 * RATE)]
    assert abs(dominant_hz(voiced, RATE) - 440.0) < 3
    sent_rms = 0.3 * 32767 / np.sqrt(2)
    assert abs(np.sqrt(np.mean(voiced.astype(np.float64) ** 2)) / sent_rms - 1) < 0.02

    # What came down: the right events, in order.
    kinds = [type(e) for e in events]
    assert kinds[0] is SpeechStarted and kinds[1] is SpeechStopped
    assert abs(events[0].at_ms - 300) <= 40  # type: ignore[union-attr]
    assert abs(events[1].at_ms - 1100) <= 40  # type: ignore[union-attr]
    finals = [e for e in events if isinstance(e, Transcript) and e.final]
    assert finals == [Transcript(TRANSCRIPT, final=True)]
    assert Transcript("What is the", final=False) in events
    started = kinds.index(ReplyStarted)
    assert kinds.index(Transcript) < started < kinds.index(ReplyAudio)
    assert events[started] == ReplyStarted(1)
    assert isinstance(events[-1], TurnDone)
    assert "".join(e.text for e in events if isinstance(e, ReplyTextDelta)) == REPLY_TEXT
    # Reply audio at the device's rate, every sample of it.
    audio_events = [e for e in events if isinstance(e, ReplyAudio)]
    assert {e.sample_rate_hz for e in audio_events} == {16_000}
    assert audio_events[0].sentence_start and not any(e.sentence_start for e in audio_events[1:])
    samples = reply_samples(events, 1)
    assert len(samples) == REPLY_MS * 16
    assert abs(dominant_hz(samples, 16_000) - REPLY_HZ) < 2

    done = events[-1]
    assert done.user_text == TRANSCRIPT and done.reply_text == REPLY_TEXT
    assert not done.interrupted and done.generated_text == REPLY_TEXT
    by_model = {u.model: u for u in done.usage}
    text, sound, stt = (
        by_model["gpt-realtime"],
        by_model["gpt-realtime:audio"],
        by_model["gpt-4o-mini-transcribe"],
    )
    assert (text.capability, text.provider) == ("llm", "openai-realtime")
    assert (text.tokens_in, text.tokens_out) == (USAGE["text_in"], USAGE["text_out"])
    assert (sound.tokens_in, sound.tokens_out) == (USAGE["audio_in"], USAGE["audio_out"])
    assert stt.capability == "stt" and abs(stt.audio_s - 0.8) < 0.05
    expected_cost = (25 * 4 + 12 * 16 + 180 * 32 + 240 * 64) / 1e6 + stt.audio_s / 60 * 0.003
    assert done.cost_usd == pytest.approx(expected_cost, rel=1e-6)
    timings = done.timings
    assert timings.speech_end_to_first_audio_ms is not None
    assert timings.turn_end_to_first_audio_ms is not None
    assert 0 <= timings.turn_end_to_first_audio_ms <= timings.speech_end_to_first_audio_ms
    assert session.history.exchanges == [Exchange(TRANSCRIPT, REPLY_TEXT)]
    assert_no_key(events)


async def test_output_at_24k_and_8k_stand_in(stand_in: RealtimeStandIn) -> None:
    for rate in (24_000, 8_000):
        session = open_session(stand_in.base_url("ok"), output_rate_hz=rate)
        await session.say("Hello")
        events = await collect_until(session, turn_done(1))
        await session.close()
        samples = reply_samples(events, 1)
        assert len(samples) == REPLY_MS * rate // 1000
        assert abs(dominant_hz(samples, rate) - REPLY_HZ) < 2


async def test_barge_in_cancels_and_truncates_stand_in(stand_in: RealtimeStandIn) -> None:
    session = open_session(stand_in.base_url("hold"))
    await feed(session, clip())

    def enough_audio(_: Event) -> bool:
        return len(reply_samples(events, 1)) >= 16 * 300  # of the 400 ms sent before holding

    events: list[Event] = []
    await collect_until(session, enough_audio, events)
    session.report_playout(1, 200.0)  # the device has played 200 ms of it
    await feed(session, clip(550.0))  # the user talks over it
    await collect_until(session, turn_done(2), events)
    await session.close()

    up = stand_in.upstreams[0]
    assert [e.get("response_id") for e in up.of_type("response.cancel")] == ["resp_1"]
    truncates = up.of_type("conversation.item.truncate")
    assert [(t["item_id"], t["content_index"], t["audio_end_ms"]) for t in truncates] == [
        ("item_a1", 0, 200)
    ]
    heard = "Paris is the capital of"  # 200 of ~400 ms: half the words
    interrupted = [e for e in events if isinstance(e, Interrupted)]
    assert interrupted == [Interrupted(1, heard)]
    after = events[events.index(interrupted[0]) :]
    assert not any(isinstance(e, ReplyAudio | ReplyTextDelta) and e.turn_id == 1 for e in after)
    first = next(e for e in events if isinstance(e, TurnDone) and e.turn_id == 1)
    assert first.interrupted and first.reply_text == heard
    assert first.generated_text == REPLY_TEXT
    assert first.usage  # the cancelled response is billed too
    assert session.was_interrupted(1) and not session.was_interrupted(2)
    assert session.history.exchanges == [
        Exchange(TRANSCRIPT, heard, interrupted=True),
        Exchange(TRANSCRIPT, REPLY_TEXT),
    ]


async def test_barge_in_after_reply_produced_only_truncates_stand_in(
    stand_in: RealtimeStandIn,
) -> None:
    session = open_session(stand_in.base_url("ok"))
    await feed(session, clip())
    events = await collect_until(session, turn_done(1))
    session.report_playout(1, 500.0)  # produced in full, half played
    await feed(session, clip(550.0))
    await collect_until(session, turn_done(2), events)
    await session.close()

    up = stand_in.upstreams[0]
    assert up.of_type("response.cancel") == []
    assert [t["audio_end_ms"] for t in up.of_type("conversation.item.truncate")] == [500]
    heard = "Paris is the capital of"
    assert [e for e in events if isinstance(e, Interrupted)] == [Interrupted(1, heard)]
    # Its turn was already reported whole; the history keeps what was heard.
    assert session.history.exchanges[0] == Exchange(TRANSCRIPT, heard, interrupted=True)


async def test_typed_turn_stand_in(stand_in: RealtimeStandIn) -> None:
    session = open_session(stand_in.base_url("ok"))
    await session.say("  Tell me about Paris  ")
    events = await collect_until(session, turn_done(1))
    await session.close()

    up = stand_in.upstreams[0]
    [item] = up.of_type("conversation.item.create")
    assert item["item"] == {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "Tell me about Paris"}],
    }
    [create] = up.of_type("response.create")
    assert create["response"]["metadata"] == {"voxgate_turn": "1"}
    assert not any(isinstance(e, SpeechStarted | Transcript) for e in events)
    done = events[-1]
    assert isinstance(done, TurnDone)
    assert (done.user_text, done.reply_text) == ("Tell me about Paris", REPLY_TEXT)
    assert {u.capability for u in done.usage} == {"llm"}  # no speech: nothing transcribed
    assert session.history.exchanges == [Exchange("Tell me about Paris", REPLY_TEXT)]


async def test_history_and_greeting_go_upstream_stand_in(stand_in: RealtimeStandIn) -> None:
    character = CharacterSettings(system_prompt="Be brief.", first_message="Hi, I'm Vox!")
    session = open_session(stand_in.base_url("ok"), character=character)
    session.history.exchanges = [Exchange("Who are you?", "I'm Vox."), Exchange(None, "Hello!")]
    await session.greet()
    events = await collect_until(session, turn_done(1))
    await session.close()

    up = stand_in.upstreams[0]
    items = [e["item"] for e in up.of_type("conversation.item.create")]
    assert [(i["role"], i["content"][0]["type"], i["content"][0]["text"]) for i in items] == [
        ("user", "input_text", "Who are you?"),
        ("assistant", "output_text", "I'm Vox."),
        ("assistant", "output_text", "Hello!"),
    ]
    [create] = up.of_type("response.create")
    assert create["response"]["instructions"].startswith("Be brief.")
    assert "Hi, I'm Vox!" in create["response"]["instructions"]
    done = events[-1]
    assert isinstance(done, TurnDone) and done.user_text == ""
    assert session.history.exchanges[-1] == Exchange(None, REPLY_TEXT)


async def test_client_commit_detection_turns_server_vad_off_stand_in(
    stand_in: RealtimeStandIn,
) -> None:
    """ClientCommit: ``turn_detection: null`` upstream; silence ends nothing, the commit does."""
    session = open_session(stand_in.base_url("ok"), detection=ClientCommit())
    assert not session.commit_turn()  # nothing sent yet
    await feed(session, concat(clip(), silence(1500)))
    await asyncio.sleep(0.3)
    up = stand_in.upstreams[0]
    assert up.session["audio"]["input"]["turn_detection"] is None
    assert up.of_type("input_audio_buffer.commit") == []
    assert session.commit_turn()
    events = await collect_until(session, turn_done(1))
    await session.close()
    assert len(up.of_type("input_audio_buffer.commit")) == 1
    assert SpeechStarted not in [type(e) for e in events]  # nobody finds speech upstream
    done = events[-1]
    assert isinstance(done, TurnDone) and done.user_text == TRANSCRIPT
    assert done.reply_text == REPLY_TEXT


async def test_server_vad_detection_sets_the_upstream_vad_stand_in(
    stand_in: RealtimeStandIn,
) -> None:
    """A protocol's ServerVAD (Elato's longer wait) wins over ``[realtime]``'s own values, which
    are the default."""
    chosen = open_session(stand_in.base_url("ok"), detection=ServerVAD(1000, 0.7))
    default = open_session(stand_in.base_url("ok"))
    await feed(chosen, silence(100))
    await feed(default, silence(100))
    await asyncio.sleep(0.3)
    await chosen.close()
    await default.close()
    detections = [up.session["audio"]["input"]["turn_detection"] for up in stand_in.upstreams]
    configured = settings("ws://unused")
    assert sorted((d["silence_duration_ms"], d["threshold"]) for d in detections) == sorted(
        [(1000, 0.7), (configured.silence_duration_ms, configured.vad_threshold)]
    )


async def test_client_commit_stand_in(stand_in: RealtimeStandIn) -> None:
    session = open_session(stand_in.base_url("ok"))
    assert not session.commit_turn()  # nothing heard yet
    await feed(session, concat(silence(300), clip()[: 16 * 900]))  # no trailing silence
    events = await collect_until(session, lambda e: isinstance(e, SpeechStarted))
    await asyncio.sleep(0.1)
    assert session.commit_turn()
    await collect_until(session, turn_done(1), events)
    await session.close()

    up = stand_in.upstreams[0]
    assert len(up.of_type("input_audio_buffer.commit")) == 1
    assert [e["response"]["metadata"] for e in up.of_type("response.create")] == [
        {"voxgate_turn": "1"}
    ]
    assert [type(e) for e in events][:2] == [SpeechStarted, SpeechStopped]
    done = events[-1]
    assert isinstance(done, TurnDone) and done.user_text == TRANSCRIPT
    assert done.reply_text == REPLY_TEXT


async def test_late_transcript_is_waited_for_stand_in(stand_in: RealtimeStandIn) -> None:
    session = open_session(stand_in.base_url("late-transcript"))
    await feed(session, clip())
    events = await collect_until(session, turn_done(1))
    await session.close()
    done = events[-1]
    assert isinstance(done, TurnDone) and done.user_text == TRANSCRIPT
    assert events.index(Transcript(TRANSCRIPT, final=True)) < len(events) - 1


async def test_missing_transcript_does_not_hold_the_turn_stand_in(
    stand_in: RealtimeStandIn,
) -> None:
    session = open_session(stand_in.base_url("no-transcript"), transcript_wait_s=0.2)
    await feed(session, clip())
    events = await collect_until(session, turn_done(1))
    await session.close()
    done = events[-1]
    assert isinstance(done, TurnDone) and done.user_text == ""
    assert done.reply_text == REPLY_TEXT


async def test_turn_rate_limit_stand_in(stand_in: RealtimeStandIn) -> None:
    session = open_session(stand_in.base_url("ok"), turn_gate=lambda: False)
    await feed(session, clip())
    events = await collect_until(
        session, lambda e: isinstance(e, ErrorEvent) and e.code is ErrorCode.RATE_LIMITED
    )
    await asyncio.sleep(0.3)
    await session.close()
    assert [e.get("response_id") for e in stand_in.upstreams[0].of_type("response.cancel")] == [
        "resp_1"
    ]
    rest = [e async for e in session.events()]
    assert not any(isinstance(e, ReplyStarted | ReplyAudio | TurnDone) for e in events + rest)


async def test_two_sessions_two_connections_stand_in(stand_in: RealtimeStandIn) -> None:
    first = open_session(stand_in.base_url("ok"))
    second = open_session(stand_in.base_url("ok"))
    await asyncio.gather(feed(first, clip(440.0)), feed(second, clip(880.0)))
    done = await asyncio.gather(
        collect_until(first, turn_done(1)), collect_until(second, turn_done(1))
    )
    await asyncio.gather(first.close(), second.close())

    assert len(stand_in.upstreams) == 2
    pitches = sorted(
        dominant_hz(up.samples[int(0.35 * RATE) : int(1.05 * RATE)], RATE)
        for up in stand_in.upstreams
    )
    assert abs(pitches[0] - 440) < 3 and abs(pitches[1] - 880) < 3
    for up in stand_in.upstreams:
        assert len(up.of_type("input_audio_buffer.append")) > 0
        assert len(up.samples) <= len(clip()) * 3 // 2  # one clip each, never both
    for events in done:
        assert isinstance(events[-1], TurnDone) and events[-1].user_text == TRANSCRIPT


async def test_unauthorized_stand_in(stand_in: RealtimeStandIn) -> None:
    wrong = "sk-wrong-key-0000"
    session = open_session(stand_in.base_url("ok"), key=wrong)
    event = await session.next_event(timeout_s=5)
    assert isinstance(event, ErrorEvent) and event.code is ErrorCode.LLM_FAILED
    assert "refused the API key (HTTP 401)" in event.message
    assert wrong not in event.message and "***" in event.message
    assert await session.next_event(timeout_s=1) is None  # the session ended
    await session.push_audio(pcm_bytes(clip()), 16_000)  # a no-op now
    await session.say("anyone there?")
    await session.close()
    assert stand_in.upstreams == []


async def test_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    session = open_session(f"ws://127.0.0.1:{port}/v1")
    event = await session.next_event(timeout_s=5)
    assert isinstance(event, ErrorEvent) and event.code is ErrorCode.LLM_FAILED
    assert event.message.startswith(
        f"cannot connect to the OpenAI Realtime server at ws://127.0.0.1:{port}"
    )
    assert await session.next_event(timeout_s=1) is None
    await session.close()


async def test_error_events_mid_session_stand_in(stand_in: RealtimeStandIn) -> None:
    session = open_session(stand_in.base_url("error"))
    errors = await collect_until(
        session, lambda e: isinstance(e, ErrorEvent) and "invalid_value" in e.message
    )
    assert [type(e) for e in errors] == [ErrorEvent, ErrorEvent]
    assert errors[0].message.startswith("unreadable event from the realtime server")  # type: ignore[union-attr]
    assert "Invalid voice for key ***" in errors[1].message  # type: ignore[union-attr]
    # The session goes on.
    await session.say("still there?")
    events = await collect_until(session, turn_done(1))
    await session.close()
    assert isinstance(events[-1], TurnDone) and events[-1].reply_text == REPLY_TEXT
    assert_no_key(errors + events)


async def test_dropped_upstream_ends_the_session_stand_in(stand_in: RealtimeStandIn) -> None:
    session = open_session(stand_in.base_url("drop"))
    await feed(session, clip())
    events = await collect_until(session, lambda e: False)  # until the session ends
    assert await session.next_event(timeout_s=0.1) is None
    error = next(e for e in events if isinstance(e, ErrorEvent))
    assert error.code is ErrorCode.LLM_FAILED and error.turn_id == 1
    assert "connection to the OpenAI Realtime server was lost" in error.message
    done = events[-1]
    assert isinstance(done, TurnDone) and done.turn_id == 1
    assert events.index(error) < len(events) - 1
    await session.push_audio(pcm_bytes(clip()), 16_000)  # no-ops once ended
    await session.say("hello?")
    assert session.commit_turn() is False
    await asyncio.wait_for(session.wait_idle(), 1)
    await session.close()
    assert len(stand_in.upstreams) == 1  # no silent reconnection
    assert_no_key(events)


@pytest.mark.skipif(not os.environ.get("OPENAI_API_KEY"), reason="needs OPENAI_API_KEY")
async def test_live_openai_realtime() -> None:
    samples, rate = read_wav(Path(__file__).parents[2] / "voxgate" / "samples" / "question.wav")
    session = RealtimeSession(
        OpenAIRealtimeSettings(api_key=SecretStr(os.environ["OPENAI_API_KEY"])),
        TurnSettings(),
        CHARACTER,
        output_rate_hz=16_000,
    )
    await feed(session, concat(samples, silence(1500, rate)), rate)
    events = await collect_until(session, turn_done(1), timeout_s=30)
    await session.close()
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert not errors, errors
    done = events[-1]
    assert isinstance(done, TurnDone)
    assert "paris" in done.generated_text.lower()
    assert len(reply_samples(events, 1)) > 16_000 // 2


# ---------------------------------------------------------------------------------------------
# Through a device protocol: the relay transport, with ``realtime`` configured


async def test_relay_device_through_realtime_stand_in(
    stand_in: RealtimeStandIn, tmp_path: Path
) -> None:
    config = server_settings(tmp_path).model_copy(
        update={"realtime": settings(stand_in.base_url("ok")), "prices": PRICES}
    )
    engines = Fakes().engines()
    store = await open_store(tmp_path)
    _, token = await store.devices.add("kitchen")
    messages: list[dict[str, Any]] = []
    audio = bytearray()
    try:
        async with (
            running_server(config, engines, store) as address,
            connect(f"ws://{address}/v1/relay", proxy=None) as ws,
        ):
            start = {"token": token, "output": {"sample_rate_hz": 24_000}, "greeting": False}
            await ws.send(json.dumps({"event": "session.start", "seq": 1, "payload": start}))
            await ws.send(json.dumps({"event": "text.input", "seq": 2, "payload": {"text": "Hi"}}))
            async with asyncio.timeout(10):
                while not messages or messages[-1]["event"] != "turn.done":
                    frame = await ws.recv()
                    if isinstance(frame, bytes):
                        audio += frame
                    else:
                        messages.append(json.loads(frame))
        history = await store.conversations.history("kitchen")
    finally:
        engines.close()
        await store.close()

    assert len(stand_in.upstreams) == 1
    assert messages[0]["event"] == "session.ready"
    done = messages[-1]["payload"]
    assert (done["user_text"], done["reply_text"]) == ("Hi", REPLY_TEXT)
    assert done["usage"]["cost_usd"] > 0
    assert len(audio) == REPLY_MS * 24 * 2  # PCM16 at the 24 kHz the device asked for
    assert API_KEY not in json.dumps(messages)
    # Kept like any turn: the transcripts of both sides, with the Realtime usage.
    assert [(m.role, m.text) for m in history] == [("user", "Hi"), ("assistant", REPLY_TEXT)]


# ---------------------------------------------------------------------------------------------
# The wire format on literals (no socket)


def test_server_events_parse_from_literals() -> None:
    pcm = b"\x01\x00\xff\x7f"
    audio = json.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": "e1",
            "response_id": "resp_9",
            "item_id": "item_9",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(pcm).decode(),
        }
    )
    assert wire.parse_server_event(audio) == wire.AudioDelta("resp_9", "item_9", pcm)
    created = '{"type":"response.created","response":{"id":"r1","metadata":{"voxgate_turn":"7"}}}'
    assert wire.parse_server_event(created) == wire.ResponseCreated("r1", 7)
    by_vad = '{"type":"response.created","response":{"id":"r2","metadata":null}}'
    assert wire.parse_server_event(by_vad) == wire.ResponseCreated("r2", None)
    done = json.dumps(
        {
            "type": "response.done",
            "response": {
                "id": "r1",
                "status": "failed",
                "status_details": {"type": "failed", "error": {"message": "overloaded"}},
                "usage": {
                    "input_token_details": {"text_tokens": 1, "audio_tokens": 2},
                    "output_token_details": {"text_tokens": 3, "audio_tokens": 4},
                },
            },
        }
    )
    assert wire.parse_server_event(done) == wire.ResponseDone(
        "r1", "failed", wire.TokenUsage(1, 2, 3, 4), "overloaded"
    )
    error = '{"type":"error","error":{"message":"m","code":"c","event_id":"voxgate_turn_3"}}'
    parsed = wire.parse_server_event(error)
    assert parsed == wire.ServerError("m", "c", "voxgate_turn_3")
    assert wire.turn_of(parsed.event_id) == 3 and wire.turn_of("evt_1") is None
    assert wire.parse_server_event('{"type":"rate_limits.updated"}') == wire.Ignored(
        "rate_limits.updated"
    )
    for bad in ("[]", "{", '{"type":"input_audio_buffer.speech_started"}'):
        with pytest.raises(wire.MalformedEvent):
            wire.parse_server_event(bad)
    with pytest.raises(wire.MalformedEvent):  # audio that is not base64
        wire.parse_server_event(audio.replace(base64.b64encode(pcm).decode(), "**"))


def test_settings_want_a_websocket_url() -> None:
    assert wire.realtime_url(OpenAIRealtimeSettings()) == (
        "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    )
    with pytest.raises(ValueError, match="ws:// or wss://"):
        OpenAIRealtimeSettings(base_url="https://api.openai.com/v1")
