"""Deepgram live transcription (WebSocket ``/v1/listen``) against a local stand-in, alone and in
spoken turns through TurnSession; the wire format's parser on literal JSON.

The stand-in is a real WebSocket server (websockets) on loopback speaking Deepgram's documented
live API: ``GET /v1/listen`` with the options in the query and ``Authorization: Token <key>``
(refusals are plain HTTP answers with a ``dg-error`` header); binary PCM16 frames in; ``Results``
messages out (an interim one for each 250 ms of audio, a final one for each 1.5 s segment);
``Finalize`` answered by a final result marked ``from_finalize``; ``KeepAlive`` unanswered;
``CloseStream`` answered by the last result, ``Metadata`` and a close. What it "hears" in a segment
is ``spoke N ms``: the voiced audio (10 ms blocks above an RMS of 1000) it got. A small front
server on the same port answers the pre-recorded ``POST /v1/listen`` itself (so a test sees
whether a batch request was made) and relays WebSocket upgrades to the stand-in. Faults: 401,
429 and 503 on the upgrade, a dropped connection mid-stream, malformed JSON.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

import voxgate
from tests.fakes import EventLog, FakeVAD, concat, make_session, pcm_bytes, silence, tone
from tests.stand_in import closed_port_url
from voxgate.core.audio import int16_to_float, read_wav, resample
from voxgate.core.capabilities import Int16Array, can_stream
from voxgate.core.config import Settings
from voxgate.core.errors import ErrorCode, ProviderError
from voxgate.core.events import (
    ErrorEvent,
    ReplyStarted,
    SpeechStopped,
    Transcript,
    TurnDone,
)
from voxgate.pipeline import Engines, TurnSession, load_engines
from voxgate.providers import deepgram_stt
from voxgate.providers.deepgram_stream import (
    DeepgramStream,
    Metadata,
    OtherMessage,
    Result,
    TranscriptAssembly,
    connect_stream,
    listen_url,
    parse_message,
)
from voxgate.providers.deepgram_stt import DeepgramSTTSettings

API_KEY = "dg-live-7f3a9c21e4"
RATE = 16_000
INTERIM_SAMPLES = 4_000  # an interim result per 250 ms of audio
SEGMENT_SAMPLES = 24_000  # a final result per 1.5 s
PRICE_PER_MINUTE = 0.0077

quiet = logging.getLogger("tests.deepgram_live_stand_in")
quiet.setLevel(logging.WARNING)  # websockets would log the request's headers (the key) at DEBUG

# ---------------------------------------------------------------------------------------------
# The stand-in


def voiced_ms(samples: Int16Array) -> int:
    blocks = len(samples) // 160
    if blocks == 0:
        return 0
    squares = np.square(samples[: blocks * 160].astype(np.float64)).reshape(blocks, 160)
    return int(np.count_nonzero(np.sqrt(squares.mean(axis=1)) > 1000)) * 10


def heard(samples: Int16Array) -> str:
    ms = voiced_ms(samples)
    return f"spoke {ms} ms" if ms else ""


def spoken_ms(text: str) -> int:
    """The voiced milliseconds a transcript of the stand-in's adds up to."""
    return sum(int(n) for n in re.findall(r"spoke (\d+) ms", text))


@dataclass
class Upstream:
    """One streaming connection the stand-in accepted."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    scenario: str
    audio: bytearray = field(default_factory=bytearray)
    controls: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def samples(self) -> Int16Array:
        return np.frombuffer(bytes(self.audio), dtype="<i2").astype(np.int16)


@dataclass
class BatchRequest:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    samples: int


class LiveStandIn:
    def __init__(self) -> None:
        self.upstreams: list[Upstream] = []
        self.handshakes: list[str] = []  # scenarios of every upgrade, refused ones too
        self.batch: list[BatchRequest] = []
        self._ws: Server | None = None
        self._front: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._ws = await serve(
            self._serve, "127.0.0.1", 0, process_request=self._check, logger=quiet
        )
        self._front = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._ws is not None and self._front is not None
        self._front.close()
        self._ws.close()
        for task in self._relays:
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        await self._ws.wait_closed()
        await self._front.wait_closed()

    def base_url(self, scenario: str) -> str:
        assert self._front is not None
        return f"http://127.0.0.1:{self._front.sockets[0].getsockname()[1]}/{scenario}"

    # -- the front: batch requests here, upgrades relayed -----------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"POST "):
                await self._batch(head, reader, writer)
            else:
                await self._relay(head, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._relays.discard(task)

    async def _batch(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        lines = head.decode().split("\r\n")
        target = urlsplit(lines[0].split(" ")[1])
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        with wave.open(io.BytesIO(body), "rb") as wav:
            samples = wav.getnframes()
        self.batch.append(BatchRequest(target.path, parse_qs(target.query), headers, samples))
        scenario = target.path.split("/")[1]
        if scenario == "unauthorized":
            status = "401 Unauthorized"
            answer = {"err_code": "INVALID_AUTH", "err_msg": f"Invalid credentials: {API_KEY}"}
        else:
            status = "200 OK"
            alternative = {"transcript": f"batch heard {samples} samples", "confidence": 0.9}
            answer = {"metadata": {}, "results": {"channels": [{"alternatives": [alternative]}]}}
        data = json.dumps(answer).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    async def _relay(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        assert self._ws is not None
        port = self._ws.sockets[0].getsockname()[1]
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        up_writer.write(head)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65_536):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()  # a plain TCP close: no WebSocket close frame

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    # -- the WebSocket side -------------------------------------------------------------------

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        target = urlsplit(request.path)
        scenario = target.path.split("/")[1]
        self.handshakes.append(scenario)
        query = parse_qs(target.query)
        if scenario == "unauthorized" or request.headers.get("Authorization") != (
            f"Token {API_KEY}"
        ):
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "")
            # Deepgram says why in dg-error; this one quotes the key it refused.
            got = request.headers.get("Authorization", "")
            response.headers["dg-error"] = f"Invalid credentials ({got})"
            return response
        if scenario == "rate-limited":
            response = connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "")
            response.headers["Retry-After"] = "7"
            response.headers["dg-error"] = "Too many concurrent requests"
            return response
        if scenario == "server-error":
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "try later\n")
        wanted = {"encoding": ["linear16"], "sample_rate": ["16000"], "channels": ["1"]}
        if not target.path.endswith("/v1/listen") or any(
            query.get(name) != value for name, value in wanted.items()
        ):
            response = connection.respond(HTTPStatus.BAD_REQUEST, "")
            response.headers["dg-error"] = "bad path or audio options"
            return response
        return None

    async def _serve(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        target = urlsplit(request.path)
        up = Upstream(
            path=target.path,
            query=parse_qs(target.query),
            headers={name.lower(): value for name, value in request.headers.raw_items()},
            scenario=target.path.split("/")[1],
        )
        self.upstreams.append(up)
        segment_start = 0  # samples
        interims_sent = 0

        async def send(**fields: Any) -> None:
            up.sent.append(fields)
            await ws.send(json.dumps(fields))

        async def result(final: bool, *, from_finalize: bool = False) -> None:
            samples = up.samples
            segment = samples[segment_start:]
            alternative = {"transcript": heard(segment), "confidence": 0.99, "words": []}
            await send(
                type="Results",
                channel_index=[0, 1],
                duration=len(segment) / RATE,
                start=segment_start / RATE,
                is_final=final,
                speech_final=final and not from_finalize,
                from_finalize=from_finalize,
                channel={"alternatives": [alternative]},
                metadata={"request_id": "req-1", "model_uuid": "m-1"},
            )

        try:
            async for message in ws:
                if isinstance(message, bytes):
                    up.audio += message
                    total = len(up.audio) // 2
                    if up.scenario == "drop" and total >= 6_400:
                        assert ws.transport is not None
                        ws.transport.abort()  # the network fails: no close frame
                        return
                    if up.scenario == "malformed" and total >= 6_400:
                        await ws.send('{"type": "Results", "channel": {"alterna')
                    while total - segment_start >= (interims_sent + 1) * INTERIM_SAMPLES:
                        interims_sent += 1
                        await result(final=False)
                    if total - segment_start >= SEGMENT_SAMPLES:
                        await result(final=True)
                        segment_start, interims_sent = total, 0
                    continue
                kind = json.loads(message)["type"]
                up.controls.append(kind)
                total = len(up.audio) // 2
                if kind == "Finalize" and total > segment_start:
                    await result(final=True, from_finalize=True)
                    segment_start, interims_sent = total, 0
                elif kind == "CloseStream":
                    if total > segment_start:
                        await result(final=True)
                    await send(
                        type="Metadata",
                        transaction_key="deprecated",
                        request_id="req-1",
                        sha256="0" * 64,
                        created="2026-01-01T00:00:00.000Z",
                        duration=total / RATE,
                        channels=1,
                    )
                    await ws.close()
                    return
        except ConnectionClosed:
            pass
        finally:
            up.closed.set()


@pytest.fixture
async def stand_in() -> AsyncIterator[LiveStandIn]:
    server = LiveStandIn()
    await server.start()
    yield server
    await server.stop()


def stt_settings(stand_in: LiveStandIn, scenario: str, **extra: Any) -> DeepgramSTTSettings:
    return DeepgramSTTSettings.model_validate(
        {
            "provider": "deepgram",
            "base_url": stand_in.base_url(scenario),
            "api_key": API_KEY,
            "streaming": True,
            **extra,
        }
    )


def float_audio(samples: Int16Array) -> Any:
    return int16_to_float(samples)


# ---------------------------------------------------------------------------------------------
# The client alone


async def test_stream_request_shape_audio_interims_and_finalize_stand_in(
    stand_in: LiveStandIn,
) -> None:
    stt = deepgram_stt.create(
        stt_settings(stand_in, "ok", language="de", extra_headers={"X-Tenant": "acme"}), None
    )
    try:
        assert can_stream(stt)
        stream = await stt.open_stream()
        speech = tone(1000)
        for offset in range(0, len(speech), 512):
            await stream.push(float_audio(speech[offset : offset + 512]))
        interims = stream.interim()
        first = await asyncio.wait_for(anext(interims), 2)
        text = await asyncio.wait_for(stream.finalize(), 2)
        await stream.aclose()
        rest = [item async for item in interims]  # ends once the stream is closed
    finally:
        await stt.aclose()

    (up,) = stand_in.upstreams
    assert up.path == "/ok/v1/listen"
    assert up.query == {
        "model": ["nova-3"],
        "encoding": ["linear16"],
        "sample_rate": ["16000"],
        "channels": ["1"],
        "interim_results": ["true"],
        "punctuate": ["true"],
        "smart_format": ["true"],
        "language": ["de"],
    }
    assert up.headers["authorization"] == f"Token {API_KEY}"
    assert up.headers["x-tenant"] == "acme"
    # Every sample arrived, as PCM16 little-endian, level for level.
    assert len(up.audio) == 2 * len(speech)
    assert np.abs(up.samples.astype(np.int32) - speech).max() <= 1
    assert first == "spoke 250 ms"
    assert rest and all(spoken_ms(item) <= 1000 for item in rest)
    assert text == "spoke 1000 ms"
    assert up.controls == ["Finalize", "CloseStream"]
    assert up.sent[-1]["type"] == "Metadata"  # the server's summary came before its close
    assert up.closed.is_set()
    assert stand_in.batch == []


async def test_stream_stays_open_after_finalize_and_joins_segments_stand_in(
    stand_in: LiveStandIn,
) -> None:
    stt = deepgram_stt.create(stt_settings(stand_in, "ok"), None)
    try:
        stream = await stt.open_stream()
        await stream.push(float_audio(tone(600)))
        assert await stream.finalize() == "spoke 600 ms"
        # 2 s more: the stand-in finalizes 1.5 s on its own, Finalize the rest.
        more = concat(silence(200), tone(1800))
        for offset in range(0, len(more), 512):
            await stream.push(float_audio(more[offset : offset + 512]))
        text = await stream.finalize()
        await stream.aclose()
    finally:
        await stt.aclose()
    assert abs(spoken_ms(text) - (600 + 1800)) <= 20  # 10 ms blocks cut at segment edges
    assert text.startswith("spoke 600 ms spoke ")
    (up,) = stand_in.upstreams
    assert up.controls == ["Finalize", "Finalize", "CloseStream"]
    finals = [m for m in up.sent if m.get("is_final")]
    assert [m["from_finalize"] for m in finals] == [True, False, True]


async def test_finalize_with_nothing_left_to_flush_returns_at_once_stand_in(
    stand_in: LiveStandIn,
) -> None:
    """Deepgram answers Finalize only when it still holds audio: when its own final results
    already cover everything sent, finalize must not wait for an answer that never comes."""
    stt = deepgram_stt.create(stt_settings(stand_in, "ok", timeout_s=5), None)
    try:
        stream = await stt.open_stream()
        await stream.push(float_audio(tone(1600)))  # one frame: the stand-in finalizes it all
        await asyncio.wait_for(_until(lambda: bool(stand_in.upstreams[0].sent)), 2)
        text = await asyncio.wait_for(stream.finalize(), 1)
        await stream.aclose()
    finally:
        await stt.aclose()
    assert text == "spoke 1600 ms"
    finals = [m for m in stand_in.upstreams[0].sent if m.get("is_final")]
    assert [m["from_finalize"] for m in finals] == [False]  # no answer to the Finalize


async def test_stream_sends_keepalive_while_idle_stand_in(stand_in: LiveStandIn) -> None:
    settings = stt_settings(stand_in, "ok")
    stream = await connect_stream(
        listen_url(stand_in.base_url("ok"), "nova-3", None),
        {"Authorization": f"Token {API_KEY}"},
        server="the stand-in",
        scrub=str,
        timeout_s=settings.timeout_s,
        keepalive_s=0.1,
    )
    await stream.push(float_audio(tone(100)))
    # Idle: keepalives come every 0.1 s. Waited for, not slept for: a loaded machine runs late.
    async with asyncio.timeout(10):
        while not (stand_in.upstreams and stand_in.upstreams[0].controls.count("KeepAlive") >= 3):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    await stream.aclose()
    (up,) = stand_in.upstreams
    assert up.controls[:3] == ["KeepAlive"] * 3
    assert up.controls[-1] == "CloseStream"


async def stream_fails(stand_in: LiveStandIn, scenario: str) -> ProviderError:
    stt = deepgram_stt.create(stt_settings(stand_in, scenario), None)
    try:
        with pytest.raises(ProviderError) as info:
            stream = await stt.open_stream()
            try:
                for _ in range(20):
                    await stream.push(float_audio(tone(100)))
                    await asyncio.sleep(0.005)
                await stream.finalize()
            finally:
                await stream.aclose()
    finally:
        await stt.aclose()
    assert info.value.code is ErrorCode.STT_FAILED
    assert API_KEY not in str(info.value)
    return info.value


async def test_stream_unauthorized_is_final_and_hides_the_key_stand_in(
    stand_in: LiveStandIn,
) -> None:
    error = await stream_fails(stand_in, "unauthorized")
    assert not error.retryable
    assert "refused the API key (HTTP 401)" in str(error) and "Invalid credentials" in str(error)


async def test_stream_rate_limited_upgrade_is_retryable_stand_in(stand_in: LiveStandIn) -> None:
    error = await stream_fails(stand_in, "rate-limited")
    assert error.retryable and error.retry_after_s == 7
    assert "HTTP 429" in str(error) and "Too many concurrent requests" in str(error)


async def test_stream_server_error_upgrade_is_retryable_stand_in(stand_in: LiveStandIn) -> None:
    error = await stream_fails(stand_in, "server-error")
    assert error.retryable and "HTTP 503" in str(error)


async def test_stream_connection_refused_is_retryable() -> None:
    settings = DeepgramSTTSettings(
        provider="deepgram", base_url=closed_port_url(), api_key=API_KEY, streaming=True
    )
    stt = deepgram_stt.create(settings, None)
    try:
        with pytest.raises(ProviderError) as info:
            await stt.open_stream()
    finally:
        await stt.aclose()
    assert info.value.retryable and "cannot connect" in str(info.value)
    assert API_KEY not in str(info.value)


async def test_stream_dropped_mid_stream_stand_in(stand_in: LiveStandIn) -> None:
    error = await stream_fails(stand_in, "drop")
    assert error.retryable and "was lost" in str(error)
    (up,) = stand_in.upstreams
    assert "CloseStream" not in up.controls


async def test_stream_malformed_message_is_final_stand_in(stand_in: LiveStandIn) -> None:
    error = await stream_fails(stand_in, "malformed")
    assert not error.retryable and "unreadable message" in str(error)


# ---------------------------------------------------------------------------------------------
# Spoken turns through TurnSession, engines loaded from config


class _NoModels:
    def resolve(self, name_or_path: str) -> Path:
        raise AssertionError("stand-in engines need no model")


@pytest.fixture
async def open_session(stand_in: LiveStandIn) -> AsyncIterator[Any]:
    opened: list[tuple[TurnSession, Engines, Engines]] = []

    def open_(scenario: str = "ok", **stt: Any) -> tuple[TurnSession, EventLog]:
        section = {
            "provider": "deepgram",
            "base_url": stand_in.base_url(scenario),
            "api_key": API_KEY,
            "model": "nova-3",  # metering names the configured model, not the default
            "streaming": True,
            "retry": {"attempts": 1},
            **stt,
        }
        settings = Settings.model_validate(
            {
                "vad": {"provider": "standin"},
                "stt": section,
                "llm": {"provider": "standin"},
                "tts": {"provider": "standin"},
                "prices": {"deepgram/nova-3": {"per_audio_minute": PRICE_PER_MINUTE}},
            }
        )
        loaded = load_engines(settings, _NoModels())
        engines = Engines(vad=FakeVAD(), stt=loaded.stt, llm=loaded.llm, tts=loaded.tts)
        session = make_session(engines)
        opened.append((session, engines, loaded))
        return session, EventLog(session)

    yield open_
    for session, engines, loaded in opened:
        await session.close()
        engines.close()
        await loaded.aclose()


async def speak(session: TurnSession, samples: Int16Array, *, pace: float = 4.0) -> None:
    """Push ``samples`` in 20 ms frames, ``pace`` times faster than real time."""
    for offset in range(0, len(samples), 320):
        await session.push_audio(pcm_bytes(samples[offset : offset + 320]), RATE)
        await asyncio.sleep(0.02 / pace)


async def test_a_streamed_turn_stand_in(open_session: Any, stand_in: LiveStandIn) -> None:
    session, log = open_session()
    await speak(session, concat(silence(300), tone(1000), silence(800)))
    done = await log.wait_for_event(TurnDone)

    transcripts = log.of(Transcript)
    partials = [t for t in transcripts if not t.final]
    (final,) = [t for t in transcripts if t.final]
    stopped_at = log.events.index(log.of(SpeechStopped)[0])
    assert len(partials) >= 2, partials
    assert all(log.events.index(p) < stopped_at for p in partials)
    heard_ms = [spoken_ms(p.text) for p in partials]
    assert all(re.fullmatch(r"spoke \d+ ms", p.text) for p in partials), partials
    assert heard_ms == sorted(heard_ms) and 0 < heard_ms[0] < heard_ms[-1] <= 1020
    assert abs(spoken_ms(final.text) - 1000) <= 20
    assert done.user_text == final.text and log.of(ErrorEvent) == []

    (up,) = stand_in.upstreams
    assert stand_in.batch == []  # the transcript came from the stream alone
    assert up.controls[0] == "Finalize"
    await asyncio.wait_for(up.closed.wait(), 2)  # the stream closes at the end of the turn
    assert up.controls[-1] == "CloseStream"
    # The pre-roll went first: the stream has the 300 ms (of silence) before the speech too.
    assert len(up.audio) // 2 >= RATE * 1.2

    (stt,) = [u for u in done.usage if u.capability == "stt"]
    assert (stt.provider, stt.model) == ("deepgram", "nova-3")
    assert stt.audio_s == pytest.approx(len(up.audio) / 2 / RATE)
    assert stt.cost_usd == pytest.approx(stt.audio_s / 60 * PRICE_PER_MINUTE, abs=1e-8)


async def test_speech_resuming_abandons_the_speculative_reply_stand_in(
    open_session: Any, stand_in: LiveStandIn
) -> None:
    session, log = open_session()
    await speak(session, concat(silence(300), tone(600), silence(250)))
    # The speculative reply has asked for the transcript so far...
    await asyncio.wait_for(_until(lambda: stand_in.upstreams[0].controls == ["Finalize"]), 2)
    # ...and the user goes on.
    await speak(session, concat(tone(500), silence(800)))
    done = await log.wait_for_event(TurnDone)

    (final,) = [t for t in log.of(Transcript) if t.final]
    assert abs(spoken_ms(final.text) - 1100) <= 30, final.text
    assert done.user_text == final.text
    assert [event.turn_id for event in log.of(ReplyStarted)] == [done.turn_id]
    (up,) = stand_in.upstreams
    assert up.controls[:2] == ["Finalize", "Finalize"]
    assert stand_in.batch == [] and len(stand_in.upstreams) == 1
    (stt,) = [u for u in done.usage if u.capability == "stt"]
    assert stt.audio_s == pytest.approx(len(up.audio) / 2 / RATE)


async def test_a_dropped_stream_falls_back_to_the_batch_call_stand_in(
    open_session: Any, stand_in: LiveStandIn
) -> None:
    session, log = open_session("drop")
    speech = concat(silence(300), tone(1000), silence(800))
    await speak(session, speech)
    done = await log.wait_for_event(TurnDone)

    assert log.of(ErrorEvent) == []  # the user never hears of it
    (batch,) = stand_in.batch
    assert batch.path == "/drop/v1/listen"
    assert done.user_text == f"batch heard {batch.samples} samples"
    assert RATE * 1.0 <= batch.samples <= RATE * 1.8  # the recorded utterance
    (stt,) = [u for u in done.usage if u.capability == "stt"]
    assert stt.audio_s == pytest.approx(batch.samples / RATE)


async def test_a_refused_stream_and_batch_call_reach_the_device_without_the_key_stand_in(
    open_session: Any, stand_in: LiveStandIn
) -> None:
    session, log = open_session("unauthorized")
    await speak(session, concat(silence(300), tone(600), silence(800)), pace=50)
    error = await log.wait_for_event(ErrorEvent)
    assert error.code is ErrorCode.STT_FAILED and "401" in error.message
    assert API_KEY not in error.message
    assert stand_in.handshakes == ["unauthorized"] and len(stand_in.batch) == 1


async def test_a_non_streaming_deepgram_makes_batch_requests_only_stand_in(
    open_session: Any, stand_in: LiveStandIn
) -> None:
    session, log = open_session(streaming=False)
    await speak(session, concat(silence(300), tone(600), silence(800)), pace=50)
    done = await log.wait_for_event(TurnDone)
    assert stand_in.handshakes == [] and len(stand_in.batch) >= 1
    assert done.user_text.startswith("batch heard ")
    assert all(t.final for t in log.of(Transcript))  # no partials: partial_transcripts is off


async def test_closing_the_session_mid_utterance_closes_the_stream_stand_in(
    open_session: Any, stand_in: LiveStandIn
) -> None:
    session, log = open_session()
    await speak(session, concat(silence(300), tone(800)))
    await asyncio.wait_for(_until(lambda: bool(stand_in.upstreams)), 2)
    await session.close()
    (up,) = stand_in.upstreams
    await asyncio.wait_for(up.closed.wait(), 2)
    assert up.controls == ["CloseStream"]
    assert log.of(TurnDone) == []


async def _until(condition: Any) -> None:
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------------------------------------
# The wire format, on literals


def test_results_parse_from_literals() -> None:
    interim = (
        '{"type": "Results", "channel_index": [0, 1], "duration": 1.1, "start": 0.0,'
        ' "is_final": false, "speech_final": false, "channel": {"alternatives":'
        ' [{"transcript": "another big", "confidence": 0.9, "words": []}]},'
        ' "metadata": {"request_id": "r", "model_uuid": "m"}}'
    )
    assert parse_message(interim) == Result("another big", False, False, False, 0.0, 1.1)
    final = (
        '{"type": "Results", "duration": 0.5, "start": 1.5, "is_final": true,'
        ' "speech_final": true, "from_finalize": true,'
        ' "channel": {"alternatives": [{"transcript": " problem. "}]}}'
    )
    parsed = parse_message(final)
    assert parsed == Result("problem.", True, True, True, 1.5, 0.5)
    assert isinstance(parsed, Result) and parsed.end_s == 2.0
    metadata = (
        '{"type": "Metadata", "transaction_key": "deprecated", "request_id": "8c8e",'
        ' "sha256": "e3b0", "created": "2024-08-29T22:37:55.202Z", "duration": 2.5,'
        ' "channels": 1}'
    )
    assert parse_message(metadata) == Metadata("8c8e", 2.5)
    assert parse_message('{"type": "UtteranceEnd", "last_word_end": 2.1}') == OtherMessage(
        "UtteranceEnd"
    )


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "Results", "channel": {"alterna',
        '{"type": "Results", "channel": {"alternatives": []}}',
        '{"type": "Results", "channel": {"alternatives": [{"transcript": 7}]}}',
        '{"channel": {}}',
        "[1, 2]",
    ],
)
def test_unreadable_messages_are_final_errors(text: str) -> None:
    with pytest.raises(ProviderError) as info:
        parse_message(text)
    assert not info.value.retryable and "unreadable message" in str(info.value)


def test_the_assembly_joins_final_segments_and_the_latest_interim() -> None:
    assembly = TranscriptAssembly()

    def result(text: str, final: bool, start: float, duration: float) -> Result:
        return Result(text, final, False, False, start, duration)

    assembly.add(result("what is", False, 0.0, 0.8))
    assert (assembly.text, assembly.running) == ("", "what is")
    assembly.add(result("what is two", True, 0.0, 1.0))
    assembly.add(result("plus", False, 1.0, 0.4))
    assert (assembly.text, assembly.running) == ("what is two", "what is two plus")
    assembly.add(result("plus two?", True, 1.0, 0.9))
    assembly.add(result("", True, 1.9, 0.3))  # silence: an empty final segment
    assert (assembly.text, assembly.running) == ("what is two plus two?", "what is two plus two?")
    assert assembly.final_end_s == pytest.approx(2.2)


def test_the_listen_url() -> None:
    assert listen_url("https://api.deepgram.com", "nova-3", "en") == (
        "wss://api.deepgram.com/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000"
        "&channels=1&interim_results=true&punctuate=true&smart_format=true&language=en"
    )
    assert listen_url("http://127.0.0.1:9/x/", "nova-2", None).startswith(
        "ws://127.0.0.1:9/x/v1/listen?model=nova-2&"
    )


# ---------------------------------------------------------------------------------------------
# Live: the real service, only with a key

_LIVE_KEY = os.environ.get("DEEPGRAM_API_KEY")


@pytest.mark.skipif(not _LIVE_KEY, reason="DEEPGRAM_API_KEY is not set: no live Deepgram test")
async def test_live_deepgram_streams_the_sample_question() -> None:
    samples, rate = read_wav(Path(voxgate.__file__).parent / "samples" / "question.wav")
    audio = int16_to_float(resample(samples, rate, RATE))
    stt = deepgram_stt.create(
        DeepgramSTTSettings(provider="deepgram", api_key=_LIVE_KEY, streaming=True), None
    )
    try:
        stream = await stt.open_stream()
        assert isinstance(stream, DeepgramStream)
        for offset in range(0, len(audio), 512):
            await stream.push(audio[offset : offset + 512])
            await asyncio.sleep(0.008)
        text = await asyncio.wait_for(stream.finalize(), 10)
        await stream.aclose()
    finally:
        await stt.aclose()
    assert "capital" in text.lower() and "france" in text.lower()
