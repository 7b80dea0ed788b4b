"""voice-assistant-proxy sessions over real sockets: ``POST /v1/audio`` with httpx, ``/ws`` with
websockets. The clients follow shared/protocols/assistant-proxy.md, as the firmware does."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.fakes import (
    FakeLLM,
    Fakes,
    FakeSTT,
    FakeTTS,
    FakeVAD,
    bounded,
    concat,
    pcm_bytes,
    silence,
    stt_failure,
    tone,
)
from tests.server_harness import open_store, running_server, server_settings
from voxgate.core.capabilities import Float32Array
from voxgate.pipeline import Engines
from voxgate.server.context import SHARED_TOKEN_DEVICE, ServerContext
from voxgate.server.transports.assistant_proxy import HttpSessions, Refused

FIRMWARE_TOKEN = "498b1b65-26a3-49e8-a55e-46a0b47365e2"
REPLY = "Paris is the capital."
WORD_BYTES = 2400 * 2  # FakeTTS: 100 ms a word, at 24 kHz here
CHUNK_BYTES = 3200  # 100 ms at 16 kHz


def _fakes(reply: str = REPLY, *, tts_delay_s: float = 0.0, **llm: float) -> Fakes:
    return Fakes(
        llm=FakeLLM([reply], **llm),
        tts=FakeTTS(sample_rate_hz=24_000, ms_per_word=100, delay_s=tts_delay_s),
    )


@dataclass
class Server:
    address: str
    token: str
    fakes: Fakes

    @property
    def http(self) -> str:
        return f"http://{self.address}"


@asynccontextmanager
async def serve(
    tmp_path: Path, fakes: Fakes | None = None, **server: object
) -> AsyncIterator[Server]:
    fakes = fakes or _fakes()
    engines = fakes.engines()
    store = await open_store(tmp_path)
    _, token = await store.devices.add("kitchen")
    try:
        async with running_server(server_settings(tmp_path, **server), engines, store) as address:
            yield Server(address, token, fakes)
    finally:
        engines.close()
        await store.close()


def _speech() -> bytes:
    """What FakeVAD hears as 600 ms of speech, then 300 ms of silence."""
    return pcm_bytes(concat(tone(600), silence(300)))


# -- a POST /v1/audio client, from the spec ---------------------------------------------------


async def post_chunk(
    client: httpx.AsyncClient,
    token: str | None,
    session_id: str,
    index: int,
    pcm: bytes = b"",
    *,
    final: bool = False,
) -> httpx.Response:
    body = {
        "session_id": session_id,
        "chunk_index": index,
        "pcm_base64": base64.b64encode(pcm).decode(),
        "is_final": final,
    }
    headers = {"X-Assistant-Token": token} if token is not None else {}
    return await client.post("/v1/audio", json=body, headers=headers, timeout=30)


async def http_turn(
    client: httpx.AsyncClient, token: str, session_id: str, pcm: bytes
) -> httpx.Response:
    """The firmware's turn: 100 ms chunks counted from 0, then an empty final chunk."""
    pieces = [pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES)]
    for index, piece in enumerate(pieces):
        ack = await post_chunk(client, token, session_id, index, piece)
        assert ack.status_code == 200 and ack.json() == {"status": "partial"}, ack.text
    return await post_chunk(client, token, session_id, len(pieces), final=True)


async def test_http_bad_or_missing_token_is_401_with_the_original_body(tmp_path: Path) -> None:
    async with serve(tmp_path) as server, httpx.AsyncClient(base_url=server.http) as client:
        wrong = await post_chunk(client, "not-a-token", "esp32-0000abcd", 0, b"\0\0")
        missing = await post_chunk(client, None, "esp32-0000abcd", 0, b"\0\0")
        firmware_default = await post_chunk(client, FIRMWARE_TOKEN, "esp32-0000abcd", 0)
    for response in (wrong, missing, firmware_default):  # no shared token configured
        assert response.status_code == 401
        assert response.content == b'{"detail":"invalid token"}'


async def test_http_chunks_are_partial_and_retried_indices_are_duplicates(tmp_path: Path) -> None:
    async with serve(tmp_path) as server, httpx.AsyncClient(base_url=server.http) as client:
        chunk = pcm_bytes(silence(100))
        statuses = []
        for index in (0, 1, 1, 0, 2, 2, 3):
            response = await post_chunk(client, server.token, "esp32-0000abcd", index, chunk)
            assert response.status_code == 200
            statuses.append(response.json()["status"])
        other = await post_chunk(client, server.token, "esp32-other", 0, chunk)
    assert statuses == [
        "partial",
        "partial",
        "duplicate",
        "duplicate",
        "partial",
        "duplicate",
        "partial",
    ]
    assert other.json() == {"status": "partial"}  # indices are per session


async def test_http_final_chunk_streams_the_reply_as_24khz_pcm(tmp_path: Path) -> None:
    async with serve(tmp_path) as server, httpx.AsyncClient(base_url=server.http) as client:
        reply = await http_turn(client, server.token, "esp32-0000abcd", _speech())
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/octet-stream"
    assert reply.headers["x-session-id"] == "esp32-0000abcd"
    assert reply.headers["cache-control"] == "no-cache"
    assert reply.headers.get("transfer-encoding") == "chunked"
    assert "x-voxgate-error" not in reply.headers
    assert len(reply.content) == len(REPLY.split()) * WORD_BYTES
    assert set(np.frombuffer(reply.content, dtype="<i2").tolist()) == {FakeTTS.LEVEL}
    assert server.fakes.stt.call_ms and 600 <= server.fakes.stt.call_ms[0] <= 1400


async def test_http_the_device_ends_the_turn_not_the_server_vad(tmp_path: Path) -> None:
    async with serve(tmp_path) as server, httpx.AsyncClient(base_url=server.http) as client:
        pcm = pcm_bytes(concat(tone(600), silence(2000)))  # far past the 500 ms end of turn
        pieces = [pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES)]
        for index, piece in enumerate(pieces):
            assert (await post_chunk(client, server.token, "s", index, piece)).status_code == 200
        await asyncio.sleep(0.2)
        transcribed_before_final = len(server.fakes.stt.calls)
        reply = await post_chunk(client, server.token, "s", len(pieces), final=True)
    assert transcribed_before_final == 0
    assert len(reply.content) == len(REPLY.split()) * WORD_BYTES


async def test_http_session_id_keeps_the_conversation_across_turns(tmp_path: Path) -> None:
    fakes = Fakes(
        stt=FakeSTT(["My name is Ada.", "What is my name?"]),
        llm=FakeLLM(["Hello Ada."], ["You are Ada."]),
        tts=FakeTTS(sample_rate_hz=24_000),
    )
    async with serve(tmp_path, fakes) as server, httpx.AsyncClient(base_url=server.http) as client:
        first = await http_turn(client, server.token, "esp32-0000abcd", _speech())
        second = await http_turn(client, server.token, "esp32-0000abcd", _speech())
        elsewhere = await http_turn(client, server.token, "esp32-ffff0000", _speech())
    assert len(first.content) == 2 * WORD_BYTES and len(second.content) == 3 * WORD_BYTES
    assert elsewhere.status_code == 200
    second_call = [(m.role, m.content) for m in fakes.llm.calls[1]]
    assert second_call[-3:] == [
        ("user", "My name is Ada."),
        ("assistant", "Hello Ada."),
        ("user", "What is my name?"),
    ]
    # Another session_id of the same device: its conversation goes on (from the database).
    assert ("assistant", "You are Ada.") in [(m.role, m.content) for m in fakes.llm.calls[2]]


async def test_http_a_turn_without_speech_gives_an_empty_body_and_says_why(tmp_path: Path) -> None:
    async with serve(tmp_path) as server, httpx.AsyncClient(base_url=server.http) as client:
        quiet = await http_turn(client, server.token, "esp32-0000abcd", pcm_bytes(silence(500)))
        after = await http_turn(client, server.token, "esp32-0000abcd", _speech())
    assert quiet.status_code == 200 and quiet.content == b""
    assert quiet.headers["x-voxgate-error"] == "no_speech"
    assert quiet.headers["x-session-id"] == "esp32-0000abcd"
    assert len(after.content) == len(REPLY.split()) * WORD_BYTES


async def test_http_malformed_bodies_are_422_with_a_clear_detail(tmp_path: Path) -> None:
    headers_ok: dict[str, str] = {}
    async with serve(tmp_path) as server, httpx.AsyncClient(base_url=server.http) as client:
        headers_ok = {"X-Assistant-Token": server.token}
        not_json = await client.post("/v1/audio", content=b"{nope", headers=headers_ok)
        no_id = await client.post(
            "/v1/audio", json={"chunk_index": 0, "pcm_base64": ""}, headers=headers_ok
        )
        odd = await client.post(
            "/v1/audio",
            json={"session_id": "s", "chunk_index": 0, "pcm_base64": "AAAA"},
            headers=headers_ok,
        )
        ok = await post_chunk(client, server.token, "s", 0, b"\0\0")
    assert not_json.status_code == 422 and "not valid JSON" in not_json.json()["detail"]
    assert no_id.status_code == 422 and "session_id" in no_id.json()["detail"]
    assert odd.status_code == 422 and "even number of bytes" in odd.json()["detail"]
    assert ok.json() == {"status": "partial"}


async def test_http_a_body_over_the_limit_is_413(tmp_path: Path) -> None:
    async with (
        serve(tmp_path, max_message_bytes=4096) as server,
        httpx.AsyncClient(base_url=server.http) as client,
    ):
        big = await post_chunk(client, server.token, "s", 0, bytes(4000))  # ~5.4 KB of base64
        fits = await post_chunk(client, server.token, "s", 0, bytes(2000))
    assert big.status_code == 413 and "too large" in big.json()["detail"]
    assert fits.json() == {"status": "partial"}


async def test_http_shared_token_mode_serves_the_firmware_default(tmp_path: Path) -> None:
    async with (
        serve(tmp_path, shared_token=FIRMWARE_TOKEN) as server,
        httpx.AsyncClient(base_url=server.http) as client,
    ):
        reply = await http_turn(client, FIRMWARE_TOKEN, "esp32-0000abcd", _speech())
        own = await post_chunk(client, server.token, "esp32-0000abcd", 0)
        wrong = await post_chunk(client, FIRMWARE_TOKEN[:-1], "esp32-0000abcd", 0)
    assert len(reply.content) == len(REPLY.split()) * WORD_BYTES
    assert own.json() == {"status": "partial"}  # device tokens still work
    assert wrong.status_code == 401


class FlakyVAD(FakeVAD):
    """FakeVAD that crashes ``failures`` times."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    def new_stream(self) -> _FlakyStream:  # type: ignore[override]
        return _FlakyStream(self)


class _FlakyStream:
    def __init__(self, vad: FlakyVAD) -> None:
        self._vad = vad
        self._inner = FakeVAD.new_stream(vad)

    def speech_probabilities(self, chunks: Float32Array) -> Float32Array:
        if self._vad.failures:
            self._vad.failures -= 1
            raise RuntimeError("VAD crashed")
        return self._inner.speech_probabilities(chunks)

    def reset(self) -> None:
        pass


async def test_http_server_errors_are_500_and_the_session_stays_usable(tmp_path: Path) -> None:
    vad = FlakyVAD()
    fakes = _fakes()
    fakes.vad = vad
    fakes.stt.script = [stt_failure()]
    async with serve(tmp_path, fakes) as server, httpx.AsyncClient(base_url=server.http) as client:
        vad.failures = 1
        failed = await post_chunk(client, server.token, "esp32-0000abcd", 0, pcm_bytes(tone(100)))
        retried = await post_chunk(client, server.token, "esp32-0000abcd", 0, pcm_bytes(tone(100)))
        stt_failed = await post_chunk(
            client, server.token, "esp32-0000abcd", 1, _speech(), final=True
        )
        after = await http_turn(client, server.token, "esp32-0000abcd", _speech())
    assert failed.status_code == 500 and failed.content == b'{"detail":"proxy_ingest_failed"}'
    assert retried.json() == {"status": "partial"}  # a failed chunk is not counted as seen
    assert stt_failed.status_code == 500 and stt_failed.json() == {"detail": "proxy_ingest_failed"}
    assert stt_failed.headers["x-voxgate-error"] == "stt_failed"
    assert after.status_code == 200 and len(after.content) == len(REPLY.split()) * WORD_BYTES


async def test_http_device_leaving_mid_reply_ends_that_reply_only(tmp_path: Path) -> None:
    long_reply = "One two three four five six seven eight nine ten eleven twelve."
    fakes = _fakes(long_reply, tts_delay_s=0.15)
    fakes.llm.replies.append(["Yes."])
    async with serve(tmp_path, fakes) as server, httpx.AsyncClient(base_url=server.http) as client:
        pieces = [_speech()[i : i + CHUNK_BYTES] for i in range(0, len(_speech()), CHUNK_BYTES)]
        for index, piece in enumerate(pieces):
            await post_chunk(client, server.token, "esp32-0000abcd", index, piece)
        body = {
            "session_id": "esp32-0000abcd",
            "chunk_index": 9,
            "pcm_base64": "",
            "is_final": True,
        }
        headers = {"X-Assistant-Token": server.token}
        async with client.stream("POST", "/v1/audio", json=body, headers=headers) as streamed:
            assert streamed.status_code == 200
            async for first in streamed.aiter_bytes():
                assert first
                break
        started = time.monotonic()
        second = await http_turn(client, server.token, "esp32-0000abcd", _speech())
        health = (await client.get("/healthz")).json()
    # Only the second reply, nothing left over from the first; and no waiting for it to finish.
    assert second.status_code == 200 and len(second.content) == WORD_BYTES
    assert time.monotonic() - started < 12 * 0.15
    # The history keeps what was sent before the device left, not the whole reply.
    assistant = [m.content for m in fakes.llm.calls[1] if m.role == "assistant"]
    assert not any("twelve" in text for text in assistant), assistant
    assert health["sessions"] == 1  # the HTTP session lives on for the next turn


# -- the registry of HTTP sessions ------------------------------------------------------------


async def test_http_sessions_expire_when_idle_and_are_capped_per_device(tmp_path: Path) -> None:
    fakes = _fakes()
    engines: Engines = fakes.engines()
    store = await open_store(tmp_path)
    ctx = ServerContext(server_settings(tmp_path), engines, store)
    now = [0.0]
    sessions = HttpSessions(ctx, idle_s=300, per_device=2, clock=lambda: now[0])
    store.writer.start()
    device = await store.devices.ensure(SHARED_TOKEN_DEVICE)
    a = await sessions.acquire(device, "a")
    sessions.release(a)
    now[0] = 10
    b = await sessions.acquire(device, "b")
    assert await sessions.acquire(device, "a") is a  # the same session again
    sessions.release(a)
    now[0] = 20
    c = await sessions.acquire(device, "c")  # over the cap: the idle "a" (LRU) makes room
    assert len(sessions) == 2 and a.session not in ctx.sessions and a.session is not c.session
    with pytest.raises(Refused) as refused:
        await sessions.acquire(device, "d")  # b and c are both in use
    assert refused.value.status_code == 429
    sessions.release(b)
    sessions.release(c)
    now[0] = 20 + 301
    d = await sessions.acquire(device, "d")
    assert len(sessions) == 1 and ctx.sessions == {d.session}  # b and c expired
    sessions.release(d)
    await ctx.close_session(d.session)
    engines.close()
    await store.close()


# -- /ws --------------------------------------------------------------------------------------


def _ws_url(server: Server, token: str | None = None) -> str:
    return f"ws://{server.address}/ws" + (f"?token={token}" if token else "")


async def _closed(ws: ClientConnection, timeout_s: float = 5.0) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        assert closed.rcvd is not None
        return closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("not closed")


async def _send_frames(ws: ClientConnection, pcm: bytes, frame_bytes: int = CHUNK_BYTES) -> None:
    for offset in range(0, len(pcm), frame_bytes):
        await ws.send(pcm[offset : offset + frame_bytes])


async def _receive_reply(
    ws: ClientConnection, audio_bytes: int, timeout_s: float = 10
) -> list[str | bytes]:
    """Messages until ``audio_bytes`` of binary audio came."""
    messages: list[str | bytes] = []
    async with asyncio.timeout(timeout_s):
        while sum(len(m) for m in messages if isinstance(m, bytes)) < audio_bytes:
            messages.append(await ws.recv())
    return messages


@bounded(20)
async def test_ws_bad_or_missing_token_closes_1008(tmp_path: Path) -> None:
    async with serve(tmp_path) as server:
        for url, headers in [
            (_ws_url(server), {}),
            (_ws_url(server, "wrong"), {}),
            (_ws_url(server), {"X-Assistant-Token": "wrong"}),
        ]:
            async with connect(url, additional_headers=headers) as ws:
                assert await _closed(ws) == (1008, "invalid token")


@bounded(20)
async def test_ws_speech_events_then_the_reply_in_order(tmp_path: Path) -> None:
    async with serve(tmp_path) as server:
        headers = {"X-Assistant-Token": server.token}
        async with connect(_ws_url(server), additional_headers=headers) as ws:
            await _send_frames(ws, pcm_bytes(concat(tone(600), silence(700))))
            messages = await _receive_reply(ws, len(REPLY.split()) * WORD_BYTES)
    texts = [m for m in messages if isinstance(m, str)]
    assert texts == ['{"type":"speech_start"}', '{"type":"speech_end"}']
    assert messages.index(texts[1]) < min(i for i, m in enumerate(messages) if isinstance(m, bytes))
    audio = b"".join(m for m in messages if isinstance(m, bytes))
    assert len(audio) == len(REPLY.split()) * WORD_BYTES
    assert set(np.frombuffer(audio, dtype="<i2").tolist()) == {FakeTTS.LEVEL}


@bounded(20)
async def test_ws_an_empty_frame_ends_the_turn_and_query_tokens_work(tmp_path: Path) -> None:
    async with serve(tmp_path) as server, connect(_ws_url(server, server.token)) as ws:
        await _send_frames(ws, pcm_bytes(tone(600)))  # no trailing silence: VAD cannot end it
        first = await ws.recv()
        await asyncio.sleep(0.3)
        await ws.send(b"")
        messages = await _receive_reply(ws, len(REPLY.split()) * WORD_BYTES)
    assert first == '{"type":"speech_start"}'
    assert messages[0] == '{"type":"speech_end"}'
    assert server.fakes.stt.call_ms and server.fakes.stt.call_ms[0] >= 500


def _zero_crossings(pcm: bytes) -> int:
    samples = np.frombuffer(pcm, dtype="<i2")
    return int(np.count_nonzero(np.diff(np.signbit(samples))))


@bounded(20)
async def test_ws_silence_timeout_beeps_then_closes_1000(tmp_path: Path) -> None:
    async with (
        serve(tmp_path, proxy_silence_timeout_s=0.5) as server,
        connect(_ws_url(server, server.token)) as ws,
    ):
        opened = time.monotonic()
        await _send_frames(ws, pcm_bytes(silence(300)))  # the device streams its muted mic
        beep = await asyncio.wait_for(ws.recv(), 5)
        waited = time.monotonic() - opened
        assert await _closed(ws) == (1000, "Silence timeout")
    assert isinstance(beep, bytes)
    assert len(beep) == 24_000 * 2 * 200 // 1000  # 200 ms at 24 kHz
    assert abs(_zero_crossings(beep) - 2 * 800 * 0.2) <= 6  # 800 Hz
    assert 0.45 <= waited < 2.0


@bounded(30)
async def test_ws_silence_timeout_waits_for_speech_and_the_reply(tmp_path: Path) -> None:
    reply = "One two three four five six seven eight."
    async with (
        serve(tmp_path, _fakes(reply, tts_delay_s=0.15), proxy_silence_timeout_s=0.5) as server,
        connect(_ws_url(server, server.token)) as ws,
    ):
        for piece in (tone(400), tone(400), silence(700)):  # 0.8 s of speech: longer than 0.5
            await _send_frames(ws, pcm_bytes(piece))
            await asyncio.sleep(0.35)
        messages = await _receive_reply(ws, len(reply.split()) * WORD_BYTES)
        finished = time.monotonic()
        beep = await asyncio.wait_for(ws.recv(), 5)
        waited = time.monotonic() - finished
        assert await _closed(ws) == (1000, "Silence timeout")
    assert messages[:2] == ['{"type":"speech_start"}', '{"type":"speech_end"}']
    assert isinstance(beep, bytes) and abs(_zero_crossings(beep) - 320) <= 6
    assert waited >= 0.3  # counted from the end of the reply


async def _sessions_open(client: httpx.AsyncClient) -> tuple[int, float]:
    health = (await client.get("/healthz")).json()
    metrics = (await client.get("/metrics")).text
    gauge = re.search(r'voxgate_sessions_open\{protocol="assistant_proxy"\} (\S+)', metrics)
    return health["sessions"], float(gauge.group(1)) if gauge else 0.0


@bounded(20)
async def test_ws_disconnect_mid_reply_closes_the_session(tmp_path: Path) -> None:
    long_reply = "One two three four five six seven eight nine ten eleven twelve."
    async with (
        serve(tmp_path, _fakes(long_reply, tts_delay_s=0.2)) as server,
        httpx.AsyncClient(base_url=server.http) as client,
    ):
        async with connect(_ws_url(server, server.token)) as ws:
            await _send_frames(ws, pcm_bytes(concat(tone(600), silence(700))))
            while not isinstance(await ws.recv(), bytes):
                pass
            assert await _sessions_open(client) == (1, 1.0)
        async with asyncio.timeout(5):
            while await _sessions_open(client) != (0, 0.0):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    assert server.fakes.tts.sentences  # the reply had begun


@bounded(20)
async def test_ws_text_and_oversize_frames_close_with_their_codes(tmp_path: Path) -> None:
    async with serve(tmp_path, max_message_bytes=4096) as server:
        async with connect(_ws_url(server, server.token)) as ws:
            await ws.send('{"type":"hello"}')
            code, reason = await _closed(ws)
            assert code == 1003 and "text frames" in reason
        async with connect(_ws_url(server, server.token)) as ws:
            await ws.send(bytes(5000))
            code, _ = await _closed(ws)
            assert code == 1009


@bounded(20)
async def test_connection_limit_refuses_new_sessions_on_both_paths(tmp_path: Path) -> None:
    async with (
        serve(tmp_path, connections_per_minute=1) as server,
        httpx.AsyncClient(base_url=server.http) as client,
        connect(_ws_url(server, server.token)) as first,
    ):
        async with connect(_ws_url(server, server.token)) as second:
            code, reason = await _closed(second)
        await first.send(pcm_bytes(silence(100)))
        refused = await post_chunk(client, server.token, "esp32-0000abcd", 0)
    assert code == 1013 and "too many connections" in reason
    assert refused.status_code == 429 and "try again later" in refused.json()["detail"]


# -- fuzzing live sessions --------------------------------------------------------------------


def _random_frames(rng: random.Random, count: int) -> Sequence[bytes | str]:
    frames: list[bytes | str] = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.1:
            frames.append("".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(40))))
        elif kind < 0.2:
            frames.append(b"")
        elif kind < 0.25:
            frames.append(rng.randbytes(9000))  # over the limit
        else:
            frames.append(rng.randbytes(rng.randrange(1, 3300)))
    return frames


@bounded(60)
async def test_fuzzed_live_sessions_leave_the_server_serving(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    async with (
        serve(tmp_path, max_message_bytes=8192, turns_per_minute=1000) as server,
        httpx.AsyncClient(base_url=server.http) as client,
    ):
        for _ in range(4):
            try:
                async with connect(_ws_url(server, server.token)) as ws:
                    for frame in _random_frames(rng, 40):
                        await ws.send(frame)
                    await asyncio.sleep(0.05)
            except ConnectionClosed:
                pass
        for _ in range(60):
            body = _random_body(rng)
            headers = {"X-Assistant-Token": server.token}
            response = await client.post("/v1/audio", content=body, headers=headers, timeout=30)
            assert response.status_code in (200, 413, 422), (body[:200], response.text)
        async with asyncio.timeout(5):  # every /ws session closed; the HTTP ones stay
            while (await _sessions_open(client))[0] > len(_HTTP_SESSION_IDS):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        async with connect(_ws_url(server, server.token)) as ws:
            await _send_frames(ws, pcm_bytes(concat(tone(600), silence(700))))
            messages = await _receive_reply(ws, len(REPLY.split()) * WORD_BYTES)
        reply = await http_turn(client, server.token, "esp32-after", _speech())
    assert '{"type":"speech_end"}' in messages
    assert len(reply.content) == len(REPLY.split()) * WORD_BYTES


_HTTP_SESSION_IDS = ("esp32-a", "esp32-b")


def _random_body(rng: random.Random) -> bytes:
    pcm = rng.randbytes(rng.randrange(0, 3300))
    body: dict[str, object] = {
        "session_id": rng.choice(_HTTP_SESSION_IDS),
        "chunk_index": rng.randrange(0, 8),
        "pcm_base64": base64.b64encode(pcm).decode(),
        "is_final": rng.random() < 0.2,
    }
    for _ in range(rng.randrange(3)):
        key = rng.choice([*body, "extra"])
        body[key] = rng.choice([None, -1, "", "x\n", 1.5, [], {}, True, "AAA", "AA=="])
    text = json.dumps(body).encode()
    if rng.random() < 0.2:
        cut = rng.randrange(len(text))
        text = text[:cut] + rng.randbytes(rng.randrange(4)) + text[cut + 1 :]
    return text


# -- real speech ------------------------------------------------------------------------------


@pytest.mark.models
async def test_http_real_question_gets_a_spoken_answer(
    tmp_path: Path, real_engines: Engines
) -> None:
    from voxgate.cli import SAMPLE_QUESTION
    from voxgate.core.audio import int16_to_float, read_wav, resample
    from voxgate.evaluation import character_error_rate, normalize_words

    heard: list[str] = []
    spoken: list[str] = []

    class RecordingSTT:
        sample_rate_hz = real_engines.stt.sample_rate_hz
        streaming = False

        async def transcribe(self, audio: Float32Array) -> str:
            text = await real_engines.stt.transcribe(audio)
            heard.append(text)
            return text

    class RecordingTTS:
        sample_rate_hz = real_engines.tts.sample_rate_hz

        def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[np.ndarray]:  # type: ignore[type-arg]
            spoken.append(text)
            return real_engines.tts.synthesize(text)

    engines = Engines(
        vad=real_engines.vad, stt=RecordingSTT(), llm=real_engines.llm, tts=RecordingTTS()
    )
    samples, rate = read_wav(SAMPLE_QUESTION)
    pcm = resample(samples, rate, 16_000).astype("<i2").tobytes() + bytes(16_000)  # + 0.5 s quiet
    store = await open_store(tmp_path)
    settings = server_settings(tmp_path, shared_token=FIRMWARE_TOKEN)
    try:
        async with (
            running_server(settings, engines, store) as address,
            httpx.AsyncClient(base_url=f"http://{address}", timeout=120) as client,
        ):
            reply = await http_turn(client, FIRMWARE_TOKEN, "esp32-5a5a5a5a", pcm)
    finally:
        engines.close()
        await store.close()
    assert reply.status_code == 200, reply.text
    assert {"capital", "france"} <= set(normalize_words(heard[0])), heard
    reply_text = " ".join(spoken)
    assert reply_text.strip() and len(reply.content) > 24_000  # over half a second of speech
    back = await real_engines.stt.transcribe(
        int16_to_float(
            resample(np.frombuffer(reply.content, dtype="<i2").astype(np.int16), 24_000, 16_000)
        )
    )
    assert character_error_rate(reply_text, back) <= 0.25, (reply_text, back)
