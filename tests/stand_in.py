"""A stand-in HTTP server on loopback for the cloud providers' tests, and what those tests share.

The server is real (a socket, HTTP/1.1, chunked replies); what it answers is up to a ``Route``
given by each provider's test, which speaks that provider's wire format. The scenario (``ok``,
``rate-limited``, ...) is the first path segment of the base URL the provider is given:
``http://127.0.0.1:PORT/<scenario>/...``. :func:`common_fault` answers the scenarios every
provider shares, in the provider's own error format.
"""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from voxgate.core.capabilities import Float32Array, Int16Array, SpeechToText, TextToSpeech
from voxgate.core.config import Settings
from voxgate.core.errors import ErrorCode, ProviderError
from voxgate.pipeline import TurnSession, load_engines
from voxgate.pipeline.drive import TurnResult, spoken_turn
from voxgate.pipeline.resilience import RetryPolicy

ODD_CHUNK_BYTES = [1, 4801, 3, 999, 2401, 7, 1]
"""How the stand-ins cut their PCM: sizes that split samples, so every cut lands mid-sample."""
RETRY_AFTER_S = 7
"""The ``rate-limited`` scenario's Retry-After: longer than any test's max backoff."""
SHORT_RETRY_AFTER_S = 0.25
"""The ``429-once`` scenario's Retry-After: short enough to wait for."""


@dataclass
class Request:
    method: str
    path: str
    """Without the query."""
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Names in lower case."""
    body: bytes
    scenario: str
    seen: int
    """How many requests this scenario has had, this one included."""

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


class Exchange:
    """How a route answers: a whole reply, or a chunked one piece by piece."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self._handler = handler

    def reply(
        self,
        status: int,
        body: str | bytes,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        self._handler.send_response(status)
        self._handler.send_header("Content-Type", content_type)
        self._handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self._handler.send_header(name, value)
        self._handler.end_headers()
        self._handler.wfile.write(data)
        self._handler.wfile.flush()

    def start_chunked(self, content_type: str, status: int = 200) -> None:
        self._handler.send_response(status)
        self._handler.send_header("Content-Type", content_type)
        self._handler.send_header("Transfer-Encoding", "chunked")
        self._handler.end_headers()
        self._handler.wfile.flush()

    def chunk(self, data: bytes) -> None:
        self._handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self._handler.wfile.flush()

    def end_chunked(self) -> None:
        self._handler.wfile.write(b"0\r\n\r\n")
        self._handler.wfile.flush()

    def odd_chunks(self, data: bytes) -> None:
        """``data`` in :data:`ODD_CHUNK_BYTES`-sized pieces, each its own network write."""
        offset = 0
        sizes = ODD_CHUNK_BYTES * (len(data) // sum(ODD_CHUNK_BYTES) + 1)
        for size in sizes:
            if offset >= len(data):
                break
            self.chunk(data[offset : offset + size])
            offset += size
            time.sleep(0.0005)  # separate network reads, so the odd cuts reach the client


Route = Callable[[Request, Exchange, "StandIn"], None]


class StandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, route: Route) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.route = route
        self.requests: list[Request] = []
        self.disconnects: queue.Queue[str] = queue.Queue()
        """Scenarios whose client went away while the stand-in was still answering."""
        self.stop = threading.Event()
        """Set at teardown: stalled scenarios give up."""
        self.release = threading.Event()
        """Gated scenarios wait for this before sending the rest."""
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()

    def url(self, scenario: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{scenario}{path}"

    def reset(self) -> None:
        self.requests.clear()
        self._seen.clear()
        self.release.clear()

    def _record(self, handler: BaseHTTPRequestHandler, body: bytes) -> Request:
        parts = urlsplit(handler.path)
        scenario = parts.path.split("/")[1]
        with self._lock:
            self._seen[scenario] += 1
            request = Request(
                method=handler.command,
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers={name.lower(): value for name, value in handler.headers.items()},
                body=body,
                scenario=scenario,
                seen=self._seen[scenario],
            )
            self.requests.append(request)
        return request


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StandIn

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request = self.server._record(self, body)
        try:
            self.server.route(request, Exchange(self), self.server)
        except OSError:  # the client went away
            self.server.disconnects.put(request.scenario)
        self.close_connection = True


@contextmanager
def serving(route: Route) -> Iterator[StandIn]:
    server = StandIn(route)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


ErrorBody = Callable[[int, str], str]
"""A provider's error body for an HTTP status and a message."""


def common_fault(request: Request, exchange: Exchange, server: StandIn, error: ErrorBody) -> bool:
    """Answer the fault scenarios every provider shares; False when ``request`` is not one.

    - ``rate-limited``: 429 with ``Retry-After: 7``, every time;
    - ``429-once``: the first request 429 with a short Retry-After, the next ones answered;
    - ``server-error``: 500;
    - ``stall``: nothing at all until teardown (the server is stuck before its first byte).
    """
    if request.scenario == "rate-limited":
        headers = {"Retry-After": str(RETRY_AFTER_S)}
        exchange.reply(429, error(429, "Too many requests"), headers=headers)
    elif request.scenario == "429-once" and request.seen == 1:
        headers = {"Retry-After": str(SHORT_RETRY_AFTER_S)}
        exchange.reply(429, error(429, "Too many requests"), headers=headers)
    elif request.scenario == "server-error":
        exchange.reply(500, error(500, "Internal server error"))
    elif request.scenario == "stall":
        server.stop.wait(10)
    else:
        return False
    return True


def stream_audio(
    request: Request, exchange: Exchange, server: StandIn, pcm: bytes, content_type: str
) -> None:
    """Send ``pcm`` chunked, as the scenario says:

    - ``gated``: the first 100 ms, then the rest once the test sets ``server.release``;
    - ``slow-first-byte``: the headers at once, the audio only after 2 s;
    - ``disconnect``: 100 ms and a byte, then the socket closes without the final chunk;
    - ``odd-total``: all but the last byte (the audio ends mid-sample);
    - ``endless...``: ~10 s of audio in 5 ms steps, until the client goes away;
    - anything else: all of it, in :data:`ODD_CHUNK_BYTES` pieces.
    """
    first = 4800  # 100 ms at 24 kHz
    exchange.start_chunked(content_type)
    if request.scenario == "gated":
        exchange.chunk(pcm[:first])
        server.release.wait(5)
        exchange.chunk(pcm[first:])
    elif request.scenario == "slow-first-byte":
        if server.stop.wait(2):
            return
        exchange.odd_chunks(pcm)
    elif request.scenario == "disconnect":
        exchange.chunk(pcm[: first + 1])
        return
    elif request.scenario == "odd-total":
        exchange.odd_chunks(pcm[:-1])
    elif request.scenario.startswith("endless"):
        for _ in range(2000):
            exchange.chunk(pcm[:first])
            time.sleep(0.005)
    else:
        exchange.odd_chunks(pcm)
    exchange.end_chunked()


def closed_port_url(path: str = "") -> str:
    """A loopback URL where nothing listens: connecting is refused."""
    with socket.socket() as sock:  # a port that was free a moment ago, now with no listener
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}{path}"


def sine_speech(text: str, sample_rate_hz: int, ms_per_char: int = 20) -> Int16Array:
    """The stand-ins' "speech" for ``text``: a sine whose pitch depends on the text, ``ms_per_char``
    long per character, loud enough that a byte-order or alignment slip changes every sample."""
    count = sample_rate_hz * ms_per_char // 1000 * len(text)
    t = np.arange(count) / sample_rate_hz
    pitch_hz = 180 + 10 * (len(text) % 20)
    return np.round(0.6 * 32767 * np.sin(2 * np.pi * pitch_hz * t)).astype(np.int16)


class Sleeps:
    """An injected sleep for :class:`RetryPolicy`: records the delay, then really sleeps it."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)
        await asyncio.sleep(delay_s)


class _NoModels:
    def resolve(self, name_or_path: str) -> Path:
        raise AssertionError("cloud and stand-in engines need no model")


async def spoken_turn_with(sections: dict[str, Any], output_rate_hz: int = 24_000) -> TurnResult:
    """One spoken turn (a 1 s tone) through engines loaded from config as the server loads them:
    ``sections`` (e.g. ``{"tts": {...}}``) over stand-in engines for everything else."""
    defaults = {capability: {"provider": "standin"} for capability in ("vad", "stt", "llm", "tts")}
    settings = Settings.model_validate({**defaults, **sections})
    engines = load_engines(settings, _NoModels())
    session = TurnSession(engines, settings.turn, settings.character, output_rate_hz=output_rate_hz)
    tone = (np.sin(np.arange(16_000) / 16_000 * 2 * np.pi * 300) * 8000).astype(np.int16)
    try:
        return await asyncio.wait_for(spoken_turn(session, tone, 16_000, realtime=False), 15)
    finally:
        await session.close()
        await engines.aclose()


def utterance(seconds: float = 0.5) -> Float32Array:
    """A 300 Hz tone at 16 kHz: what the STT providers are given to transcribe."""
    t = np.arange(round(16_000 * seconds)) / 16_000
    return (0.4 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def retry_policy(sleeps: Sleeps, attempts: int = 3) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, base_backoff_s=0.01, max_backoff_s=1.0, sleep=sleeps)


async def stt_fails(stt: SpeechToText, api_key: str) -> ProviderError:
    """The error ``stt`` fails with; it is an STT failure and does not show ``api_key``."""
    with pytest.raises(ProviderError) as info:
        await stt.transcribe(utterance())
    assert info.value.code is ErrorCode.STT_FAILED
    assert api_key not in str(info.value)
    return info.value


async def tts_fails(
    tts: TextToSpeech, api_key: str, got: list[Int16Array] | None = None
) -> ProviderError:
    """The error ``tts`` fails with (audio before it goes to ``got``); it is a TTS failure and
    does not show ``api_key``."""
    got = [] if got is None else got
    with pytest.raises(ProviderError) as info:
        async for chunk in tts.synthesize("Hello there."):
            got.append(chunk)
    assert info.value.code is ErrorCode.TTS_FAILED
    assert api_key not in str(info.value)
    return info.value


async def audio_comes_before_the_reply_is_complete(tts: TextToSpeech, server: StandIn) -> None:
    """Against the ``gated`` scenario: the first chunk arrives while the server still holds the
    rest, and all of it together is the sentence's audio, exactly."""
    text = "A long sentence, spoken slowly."
    chunks = tts.synthesize(text)
    try:
        first = await asyncio.wait_for(anext(chunks), 2)  # the server is still holding the rest
        assert 1200 <= len(first) <= 2400
        server.release.set()
        rest = [chunk async for chunk in chunks]
    finally:
        server.release.set()
        await chunks.aclose()  # type: ignore[attr-defined]
    assert np.array_equal(np.concatenate([first, *rest]), sine_speech(text, 24_000))
