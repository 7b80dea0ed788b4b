"""The OpenAI-compatible STT and TTS providers against a local stand-in server.

The stand-in speaks OpenAI's documented audio API: ``/audio/transcriptions`` takes a
multipart/form-data upload and answers ``{"text": ...}``; ``/audio/speech`` takes JSON and streams
headerless 24 kHz PCM16 LE in chunked HTTP/1.1. The scenario is chosen by the first path segment of
the base URL: ``http://127.0.0.1:PORT/<scenario>/v1``.
"""

from __future__ import annotations

import asyncio
import io
import json
import queue
import socket
import threading
import time
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from tests.fakes import FakeLLM, FakeVAD, concat, make_session, silence, tone
from voxgate.core.capabilities import ChatMessage, Int16Array
from voxgate.core.errors import ConfigError, ErrorCode, ProviderError
from voxgate.pipeline.drive import spoken_turn
from voxgate.pipeline.engines import Engines, LimitedLLM, LimitedSTT, LimitedTTS
from voxgate.providers import openai_stt, openai_tts
from voxgate.providers.openai_stt import OpenAICompatibleSTT, OpenAISTTSettings
from voxgate.providers.openai_tts import OpenAICompatibleTTS, OpenAITTSSettings

API_KEY = "sk-test-4b8e2d6f0a"
E2E_TRANSCRIPT = "What is two plus two?"
ODD_CHUNK_BYTES = [1, 4801, 3, 999, 2401, 7, 1]
"""How the stand-in cuts its PCM: sizes that split samples, so every cut lands mid-sample."""

# ---------------------------------------------------------------------------------------------
# Stand-in server


def _speech_for(text: str) -> Int16Array:
    """The stand-in's "speech" for ``text``: noise across the full range (so a byte-order or
    alignment slip changes every sample), 20 ms per character."""
    rng = np.random.default_rng(len(text))
    return rng.integers(-32768, 32767, 480 * len(text), dtype=np.int16, endpoint=True)


@dataclass
class _Upload:
    fields: dict[str, bytes] = field(default_factory=dict)
    filenames: dict[str, str] = field(default_factory=dict)


def _parse_multipart(content_type: str, body: bytes) -> _Upload:
    """Per RFC 7578: parts between ``--boundary`` lines, headers, a blank line, the content."""
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    upload = _Upload()
    for part in body.split(b"--" + boundary)[1:]:
        if part.startswith(b"--"):  # the closing delimiter
            break
        head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        disposition = next(
            line for line in head.decode().split("\r\n") if line.lower().startswith("content-dis")
        )
        params = dict(
            item.strip().split("=", 1) for item in disposition.split(";")[1:] if "=" in item
        )
        name = params["name"].strip('"')
        upload.fields[name] = content.removesuffix(b"\r\n")
        if "filename" in params:
            upload.filenames[name] = params["filename"].strip('"')
    return upload


def _read_wav(data: bytes) -> tuple[int, int, int, Int16Array]:
    with wave.open(io.BytesIO(data), "rb") as wav:
        frames = wav.readframes(wav.getnframes())
        layout = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
    return (*layout, np.frombuffer(frames, dtype="<i2").astype(np.int16))


class _StandIn(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[dict[str, Any]]
    disconnects: queue.Queue[str]
    stop: threading.Event
    release: threading.Event
    """The ``gated`` TTS scenario waits for this before sending the rest of its audio."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _StandIn

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        scenario = self.path.split("/")[1]
        request: dict[str, Any] = {"path": self.path, "headers": dict(self.headers.items())}
        self.server.requests.append(request)
        try:
            if self._fault(scenario):
                pass
            elif self.path.endswith("/audio/transcriptions"):
                self._transcribe(scenario, raw, request)
            elif self.path.endswith("/audio/speech"):
                self._speak(scenario, raw, request)
            else:
                self._reply(404, '{"error": {"message": "no such route"}}')
        except OSError:  # the client went away
            self.server.disconnects.put(scenario)
        self.close_connection = True

    def _reply(
        self,
        status: int,
        body: str,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _fault(self, scenario: str) -> bool:
        if scenario == "unauthorized":  # OpenAI echoes (part of) the rejected key
            body = {"error": {"message": f"Incorrect API key provided: {API_KEY}.", "code": None}}
            self._reply(401, json.dumps(body))
        elif scenario == "rate-limited":
            self._reply(429, '{"error": {"message": "Rate limit reached"}}', {"Retry-After": "7"})
        elif scenario == "server-error":
            self._reply(500, '{"error": {"message": "The server had an error"}}')
        elif scenario == "stall":
            self.server.stop.wait(10)
        else:
            return False
        return True

    # -- /audio/transcriptions

    def _transcribe(self, scenario: str, raw: bytes, request: dict[str, Any]) -> None:
        upload = _parse_multipart(self.headers["Content-Type"], raw)
        request["upload"] = upload
        try:
            channels, width, rate, samples = _read_wav(upload.fields["file"])
        except (KeyError, wave.Error, EOFError) as exc:
            self._reply(400, json.dumps({"error": {"message": f"bad file: {exc}"}}))
            return
        request["wav"] = (channels, width, rate)
        request["samples"] = samples
        if "model" not in upload.fields or (channels, width) != (1, 2):
            self._reply(400, '{"error": {"message": "need a model and mono PCM16"}}')
            return
        if scenario == "malformed":
            self._reply(200, '{"text": "half an ans')
        elif scenario == "not-an-object":
            self._reply(200, '["text"]')
        elif scenario == "e2e":
            self._reply(200, json.dumps({"text": f" {E2E_TRANSCRIPT}\n"}))
        else:  # Whisper's text often has a leading space
            self._reply(
                200, json.dumps({"text": f"  heard {len(samples)} samples at {rate} Hz \n"})
            )

    # -- /audio/speech

    def _speak(self, scenario: str, raw: bytes, request: dict[str, Any]) -> None:
        body = json.loads(raw)
        request["body"] = body
        if body.get("response_format") != "pcm" or not body.get("input") or "voice" not in body:
            self._reply(400, '{"error": {"message": "bad speech request"}}')
            return
        if scenario == "json":  # a server that ignores response_format
            self._reply(200, '{"audio": "UklGRg=="}')
            return
        pcm = _speech_for(body["input"]).astype("<i2").tobytes()
        if scenario == "odd-total":
            pcm = pcm[:-1]
        self.send_response(200)
        self.send_header("Content-Type", "audio/pcm")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if scenario.startswith("endless"):  # ~10 s of audio, until the client goes away
            for _ in range(2000):
                self._chunk(pcm[:4800])
                time.sleep(0.005)
        elif scenario == "gated":
            self._chunk(pcm[:4800])
            self.server.release.wait(5)
            self._chunk(pcm[4800:])
        elif scenario == "disconnect":  # drop the socket without the terminating chunk
            self._chunk(pcm[:4801])
            return
        else:
            offset = 0
            for size in ODD_CHUNK_BYTES * (len(pcm) // sum(ODD_CHUNK_BYTES) + 1):
                if offset >= len(pcm):
                    break
                self._chunk(pcm[offset : offset + size])
                offset += size
                time.sleep(0.0005)  # separate network reads, so the odd cuts reach the client
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


@pytest.fixture(scope="module")
def stand_in() -> Iterator[_StandIn]:
    server = _StandIn(("127.0.0.1", 0), _Handler)
    server.requests = []
    server.disconnects = queue.Queue()
    server.stop = threading.Event()
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def _url(server: _StandIn, scenario: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/{scenario}/v1"


@dataclass
class _Made:
    """Builds providers against the stand-in and closes them after the test."""

    server: _StandIn
    made: list[OpenAICompatibleSTT | OpenAICompatibleTTS] = field(default_factory=list)

    def stt(self, scenario: str, **kwargs: Any) -> OpenAICompatibleSTT:
        settings = OpenAISTTSettings.model_validate(
            {
                "provider": "openai",
                "model": "whisper-1",
                "base_url": _url(self.server, scenario),
                **kwargs,
            }
        )
        stt = openai_stt.create(settings, models=None)
        self.made.append(stt)
        return stt

    def tts(self, scenario: str, **kwargs: Any) -> OpenAICompatibleTTS:
        settings = OpenAITTSSettings.model_validate(
            {"provider": "openai", "base_url": _url(self.server, scenario), **kwargs}
        )
        tts = openai_tts.create(settings, models=None)
        self.made.append(tts)
        return tts


@pytest.fixture
async def make(stand_in: _StandIn) -> AsyncIterator[_Made]:
    stand_in.requests.clear()
    made = _Made(stand_in)
    yield made
    for provider in made.made:
        await provider.aclose()


def _utterance(seconds: float = 0.5) -> np.ndarray:
    t = np.arange(round(16_000 * seconds)) / 16_000
    return (0.4 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def _headers(request: dict[str, Any]) -> dict[str, str]:
    return {name.lower(): value for name, value in request["headers"].items()}


async def _stt_fails(stt: OpenAICompatibleSTT) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await stt.transcribe(_utterance())
    assert info.value.code is ErrorCode.STT_FAILED
    assert API_KEY not in str(info.value)
    return info.value


async def _tts_fails(
    tts: OpenAICompatibleTTS, got: list[Int16Array] | None = None
) -> ProviderError:
    got = [] if got is None else got
    with pytest.raises(ProviderError) as info:
        async for chunk in tts.synthesize("Hello there."):
            got.append(chunk)
    assert info.value.code is ErrorCode.TTS_FAILED
    assert API_KEY not in str(info.value)
    return info.value


# ---------------------------------------------------------------------------------------------
# Speech to text


async def test_stt_uploads_a_wav_and_returns_the_text_stand_in(make: _Made) -> None:
    stt = make.stt(
        "ok",
        model="whisper-large-v3-turbo",
        language="de",
        api_key=SecretStr(API_KEY),
        extra_headers={"X-Tenant": "acme"},
    )
    audio = _utterance(0.5)
    assert await stt.transcribe(audio) == "heard 8000 samples at 16000 Hz"

    (request,) = make.server.requests
    assert request["path"] == "/ok/v1/audio/transcriptions"
    headers = _headers(request)
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["x-tenant"] == "acme"
    assert headers["content-type"].startswith("multipart/form-data; boundary=")
    upload: _Upload = request["upload"]
    assert upload.fields["model"] == b"whisper-large-v3-turbo"
    assert upload.fields["language"] == b"de"
    assert upload.fields["response_format"] == b"json"
    assert upload.filenames["file"].endswith(".wav")
    assert request["wav"] == (1, 2, 16_000)
    expected = np.round(audio * 32767).astype(np.int16)
    assert np.abs(request["samples"].astype(np.int32) - expected).max() <= 1


async def test_stt_without_key_or_language_sends_neither_stand_in(make: _Made) -> None:
    stt = make.stt("ok", model="whisper-1", language=None)
    assert await stt.transcribe(_utterance(0.25)) == "heard 4000 samples at 16000 Hz"
    (request,) = make.server.requests
    assert "authorization" not in _headers(request)
    assert set(request["upload"].fields) == {"file", "model", "response_format"}


async def test_stt_of_no_audio_is_empty_without_a_request_stand_in(make: _Made) -> None:
    stt = make.stt("ok", model="whisper-1")
    assert await stt.transcribe(np.zeros(0, dtype=np.float32)) == ""
    assert make.server.requests == []


async def test_stt_unauthorized_is_final_and_hides_the_key_stand_in(make: _Made) -> None:
    error = await _stt_fails(make.stt("unauthorized", api_key=SecretStr(API_KEY)))
    assert not error.retryable
    assert "401" in str(error) and "Incorrect API key provided" in str(error)


async def test_stt_rate_limit_is_retryable_with_retry_after_stand_in(make: _Made) -> None:
    error = await _stt_fails(make.stt("rate-limited"))
    assert error.retryable
    assert "429" in str(error) and "retry after 7" in str(error)


async def test_stt_server_error_is_retryable_stand_in(make: _Made) -> None:
    error = await _stt_fails(make.stt("server-error"))
    assert error.retryable and "500" in str(error)


@pytest.mark.parametrize("scenario", ["malformed", "not-an-object"])
async def test_stt_malformed_answer_is_final_stand_in(make: _Made, scenario: str) -> None:
    error = await _stt_fails(make.stt(scenario))
    assert not error.retryable and "malformed" in str(error)


async def test_stt_stalled_server_times_out_stand_in(make: _Made) -> None:
    started = time.monotonic()
    error = await _stt_fails(make.stt("stall", timeout_s=0.3))
    assert error.retryable and "timed out" in str(error)
    assert time.monotonic() - started < 3


def _closed_port_url() -> str:
    with socket.socket() as sock:  # a port that was free a moment ago, now with no listener
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


async def test_stt_connection_refused_is_retryable() -> None:
    settings = OpenAISTTSettings(
        base_url=_closed_port_url(), model="whisper-1", api_key=SecretStr(API_KEY)
    )
    stt = openai_stt.create(settings, models=None)
    try:
        error = await _stt_fails(stt)
    finally:
        await stt.aclose()
    assert error.retryable and "cannot connect" in str(error)


# ---------------------------------------------------------------------------------------------
# Text to speech


async def test_tts_request_shape_and_odd_chunks_reassemble_exactly_stand_in(make: _Made) -> None:
    tts = make.tts(
        "ok", voice="alloy", api_key=SecretStr(API_KEY), extra_headers={"X-Tenant": "acme"}
    )
    text = "The quick brown fox jumps over the lazy dog."
    chunks = [chunk async for chunk in tts.synthesize(text)]

    assert tts.sample_rate_hz == 24_000
    assert all(chunk.dtype == np.int16 for chunk in chunks)
    assert np.array_equal(np.concatenate(chunks), _speech_for(text))
    assert len(chunks) > 1
    assert all(len(chunk) >= 1200 for chunk in chunks[:-1])  # 50 ms at 24 kHz

    (request,) = make.server.requests
    assert request["path"] == "/ok/v1/audio/speech"
    headers = _headers(request)
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["x-tenant"] == "acme"
    assert headers["content-type"] == "application/json"
    assert request["body"] == {
        "model": "gpt-4o-mini-tts",
        "input": text,
        "voice": "alloy",
        "response_format": "pcm",
    }


async def test_tts_uses_the_configured_model_and_no_key_stand_in(make: _Made) -> None:
    tts = make.tts("ok", voice="af_heart", model="kokoro")
    assert [chunk async for chunk in tts.synthesize("Hi.")]
    (request,) = make.server.requests
    assert request["body"]["model"] == "kokoro"
    assert "authorization" not in _headers(request)


async def test_tts_speaks_in_the_characters_voice_when_given_one_stand_in(make: _Made) -> None:
    tts = make.tts("ok", voice="alloy")
    assert [chunk async for chunk in tts.synthesize("Hi.", voice="verse")]
    assert [chunk async for chunk in tts.synthesize("Hi.")]
    first, second = make.server.requests
    assert (first["body"]["voice"], second["body"]["voice"]) == ("verse", "alloy")


async def test_tts_yields_audio_before_the_reply_is_complete_stand_in(make: _Made) -> None:
    make.server.release.clear()
    chunks = make.tts("gated", voice="alloy").synthesize("A long sentence, spoken slowly.")
    try:
        first = await asyncio.wait_for(anext(chunks), 2)  # the server is still holding the rest
        assert 1200 <= len(first) <= 2400  # 50 ms at least; only what has been sent
        make.server.release.set()
        rest = [chunk async for chunk in chunks]
    finally:
        make.server.release.set()
        await chunks.aclose()  # type: ignore[attr-defined]
    everything = np.concatenate([first, *rest])
    assert np.array_equal(everything, _speech_for("A long sentence, spoken slowly."))


async def test_tts_of_blank_text_makes_no_request_stand_in(make: _Made) -> None:
    assert [chunk async for chunk in make.tts("ok", voice="alloy").synthesize("  ")] == []
    assert make.server.requests == []


async def test_tts_unauthorized_is_final_and_hides_the_key_stand_in(make: _Made) -> None:
    error = await _tts_fails(make.tts("unauthorized", api_key=SecretStr(API_KEY)))
    assert not error.retryable
    assert "401" in str(error) and "Incorrect API key provided" in str(error)


async def test_tts_rate_limit_is_retryable_with_retry_after_stand_in(make: _Made) -> None:
    error = await _tts_fails(make.tts("rate-limited"))
    assert error.retryable
    assert "429" in str(error) and "retry after 7" in str(error)


async def test_tts_server_error_is_retryable_stand_in(make: _Made) -> None:
    error = await _tts_fails(make.tts("server-error"))
    assert error.retryable and "500" in str(error)


async def test_tts_json_instead_of_audio_is_final_stand_in(make: _Made) -> None:
    error = await _tts_fails(make.tts("json"))
    assert not error.retryable and "instead of PCM audio" in str(error)


async def test_tts_mid_stream_disconnect_stand_in(make: _Made) -> None:
    got: list[Int16Array] = []
    error = await _tts_fails(make.tts("disconnect"), got)
    assert error.retryable
    assert sum(len(chunk) for chunk in got) <= 2400  # what came before the cut, whole samples


async def test_tts_audio_ending_mid_sample_is_an_error_stand_in(make: _Made) -> None:
    error = await _tts_fails(make.tts("odd-total"))
    assert "middle of a sample" in str(error)


async def test_tts_stalled_server_times_out_stand_in(make: _Made) -> None:
    error = await _tts_fails(make.tts("stall", timeout_s=0.3))
    assert error.retryable and "timed out" in str(error)


async def test_tts_connection_refused_is_retryable() -> None:
    tts = openai_tts.create(OpenAITTSSettings(base_url=_closed_port_url()), models=None)
    try:
        error = await _tts_fails(tts)
    finally:
        await tts.aclose()
    assert error.retryable and "cannot connect" in str(error)


async def test_tts_early_close_drops_the_connection_stand_in(make: _Made) -> None:
    chunks = make.tts("endless-aclose", voice="alloy").synthesize("Never ending.")
    lengths = [len(await anext(chunks)) for _ in range(3)]
    assert min(lengths) >= 1200  # 50 ms at 24 kHz
    await chunks.aclose()  # type: ignore[attr-defined]
    # The stand-in had ~10 s of audio left to send; it sees the socket go within the timeout.
    seen = await asyncio.to_thread(make.server.disconnects.get, True, 2.0)
    assert seen == "endless-aclose"


# ---------------------------------------------------------------------------------------------
# Configuration


def test_missing_base_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"stt\.base_url"):
        openai_stt.create(OpenAISTTSettings(model="whisper-1"), models=None)
    with pytest.raises(ConfigError, match=r"tts\.base_url"):
        openai_tts.create(OpenAITTSSettings(), models=None)


def test_base_url_without_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="http"):
        openai_stt.create(
            OpenAISTTSettings(base_url="api.groq.com/openai/v1", model="whisper-1"), models=None
        )
    with pytest.raises(ConfigError, match="http"):
        openai_tts.create(OpenAITTSSettings(base_url="api.openai.com/v1"), models=None)


# ---------------------------------------------------------------------------------------------
# A spoken turn through both


async def test_a_spoken_turn_goes_through_both_stand_ins(make: _Made) -> None:
    stt = make.stt("e2e", model="whisper-large-v3-turbo", api_key=SecretStr(API_KEY))
    tts = make.tts("e2e", voice="alloy", api_key=SecretStr(API_KEY))
    llm = FakeLLM(["Four", "."])
    engines = Engines(
        vad=FakeVAD(),
        stt=LimitedSTT(stt, 1),
        llm=LimitedLLM(llm, 1),
        tts=LimitedTTS(tts, 1),
    )
    session = make_session(engines, output_rate_hz=24_000)  # the TTS rate: no resampling
    try:
        speech = concat(silence(200), tone(800), silence(100))
        result = await spoken_turn(session, speech, 16_000, realtime=False, timeout_s=10)
    finally:
        await session.close()
        engines.close()

    assert result.errors == []
    assert result.transcript == E2E_TRANSCRIPT
    assert llm.calls[0][-1] == ChatMessage("user", E2E_TRANSCRIPT)
    assert result.reply_text == "Four."
    assert result.sample_rate_hz == 24_000
    assert np.array_equal(result.pcm, _speech_for("Four."))

    uploads = [r for r in make.server.requests if r["path"].endswith("/audio/transcriptions")]
    assert uploads and all(r["wav"] == (1, 2, 16_000) for r in uploads)
    # The utterance (800 ms of tone), not the whole clip; trimmed to VAD chunks and padded.
    assert 0.6 * 16_000 <= len(uploads[-1]["samples"]) <= 1.5 * 16_000
    (speech_request,) = [r for r in make.server.requests if r["path"].endswith("/audio/speech")]
    assert speech_request["body"]["input"] == "Four."
