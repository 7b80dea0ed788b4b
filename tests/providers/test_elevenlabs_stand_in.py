"""ElevenLabs streaming TTS against a local stand-in.

The stand-in speaks ElevenLabs' documented API: ``POST /v1/text-to-speech/{voice_id}/stream
?output_format=pcm_24000`` with ``xi-api-key`` and JSON ``{"text": ..., "model_id": ...}``, and
streams headerless 24 kHz PCM16 in chunked HTTP/1.1. Errors are
``{"detail": {"status": ..., "message": ...}}``. Live tests against the real service run when
``ELEVENLABS_API_KEY`` is set (and ``ELEVENLABS_VOICE_ID``, if given, picks the voice).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest

from tests.stand_in import (
    RETRY_AFTER_S,
    SHORT_RETRY_AFTER_S,
    Exchange,
    Request,
    Sleeps,
    StandIn,
    audio_comes_before_the_reply_is_complete,
    closed_port_url,
    common_fault,
    retry_policy,
    serving,
    sine_speech,
    spoken_turn_with,
    stream_audio,
    tts_fails,
)
from voxgate.core.capabilities import Int16Array
from voxgate.core.errors import ConfigError, ErrorCode
from voxgate.pipeline.fallback import FallbackTTS
from voxgate.pipeline.resilience import CircuitBreaker, ResilientTTS
from voxgate.providers import elevenlabs_tts
from voxgate.providers.elevenlabs_tts import ElevenLabsSettings, ElevenLabsTTS

API_KEY = "xi-test-8e2f4a6c0d"
VOICE = "21m00Tcm4TlvDq8ikWAM"

# ---------------------------------------------------------------------------------------------
# Stand-in


def _error(status: int, message: str) -> str:
    statuses = {401: "invalid_api_key", 429: "too_many_concurrent_requests", 500: "server_error"}
    return json.dumps({"detail": {"status": statuses.get(status, "error"), "message": message}})


def _route(request: Request, exchange: Exchange, server: StandIn) -> None:
    if request.scenario == "unauthorized":  # a server echoing the key it rejected
        exchange.reply(401, _error(401, f"Invalid API key: {API_KEY}"))
    elif common_fault(request, exchange, server, _error):
        pass
    elif "/v1/text-to-speech/" in request.path and request.path.endswith("/stream"):
        _speak(request, exchange, server)
    else:
        exchange.reply(404, _error(404, "no such route"))


def _speak(request: Request, exchange: Exchange, server: StandIn) -> None:
    body: Any = json.loads(request.body)
    if "xi-api-key" not in request.headers or not isinstance(body.get("text"), str):
        exchange.reply(400, _error(400, "bad request"))
        return
    output_format = request.param("output_format") or "mp3_44100_128"
    if not output_format.startswith("pcm_"):
        exchange.reply(200, b"ID3\x04fake-mp3", content_type="audio/mpeg")
        return
    if request.scenario == "json":
        exchange.reply(200, '{"audio_base64": "AAAA"}')
        return
    pcm = sine_speech(body["text"], int(output_format.removeprefix("pcm_")))
    stream_audio(request, exchange, server, pcm.astype("<i2").tobytes(), "audio/pcm")


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    with serving(_route) as server:
        yield server


class _Made:
    def __init__(self, server: StandIn) -> None:
        self.server = server
        self.made: list[ElevenLabsTTS] = []

    def tts(self, scenario: str, **kwargs: Any) -> ElevenLabsTTS:
        settings = ElevenLabsSettings.model_validate(
            {
                "provider": "elevenlabs",
                "base_url": self.server.url(scenario),
                "api_key": API_KEY,
                "voice": VOICE,
                **kwargs,
            }
        )
        tts = elevenlabs_tts.create(settings, models=None)
        self.made.append(tts)
        return tts


@pytest.fixture
async def make(stand_in: StandIn) -> AsyncIterator[_Made]:
    stand_in.reset()
    made = _Made(stand_in)
    yield made
    for provider in made.made:
        await provider.aclose()


# ---------------------------------------------------------------------------------------------
# Requests and audio


async def test_request_shape_and_odd_chunks_reassemble_exactly_stand_in(make: _Made) -> None:
    tts = make.tts("ok", model="eleven_turbo_v2_5", extra_headers={"X-Tenant": "acme"})
    text = "The quick brown fox jumps over the lazy dog."
    chunks = [chunk async for chunk in tts.synthesize(text)]

    assert tts.sample_rate_hz == 24_000
    audio = np.concatenate(chunks)
    assert audio.dtype == np.int16
    assert len(audio) == 24_000 * 20 // 1000 * len(text)  # the stand-in's 20 ms per character
    assert np.array_equal(audio, sine_speech(text, 24_000))
    assert len(chunks) > 1 and all(len(chunk) >= 1200 for chunk in chunks[:-1])  # 50 ms

    (request,) = make.server.requests
    assert request.method == "POST"
    assert request.path == f"/ok/v1/text-to-speech/{VOICE}/stream"
    assert request.query == {"output_format": ["pcm_24000"]}
    assert request.headers["xi-api-key"] == API_KEY
    assert "authorization" not in request.headers
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-tenant"] == "acme"
    assert json.loads(request.body) == {"text": text, "model_id": "eleven_turbo_v2_5"}


async def test_defaults_flash_model_and_premade_voice_stand_in(stand_in: StandIn) -> None:
    stand_in.reset()
    settings = ElevenLabsSettings(
        provider="elevenlabs", base_url=stand_in.url("ok"), api_key=API_KEY
    )
    tts = elevenlabs_tts.create(settings, None)
    try:
        assert [chunk async for chunk in tts.synthesize("Hi.")]
    finally:
        await tts.aclose()
    (request,) = stand_in.requests
    assert request.path == "/ok/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream"  # "George"
    assert json.loads(request.body)["model_id"] == "eleven_flash_v2_5"


async def test_yields_audio_before_the_reply_is_complete_stand_in(make: _Made) -> None:
    await audio_comes_before_the_reply_is_complete(make.tts("gated"), make.server)


async def test_blank_text_makes_no_request_stand_in(make: _Made) -> None:
    assert [chunk async for chunk in make.tts("ok").synthesize("   ")] == []
    assert make.server.requests == []


async def test_early_close_drops_the_connection_stand_in(make: _Made) -> None:
    chunks = make.tts("endless-aclose").synthesize("Never ending.")
    lengths = [len(await anext(chunks)) for _ in range(3)]
    assert min(lengths) >= 1200
    await chunks.aclose()  # type: ignore[attr-defined]
    seen = await asyncio.to_thread(make.server.disconnects.get, True, 2.0)
    assert seen == "endless-aclose"


# ---------------------------------------------------------------------------------------------
# Faults


async def test_unauthorized_is_final_and_hides_the_key_stand_in(make: _Made) -> None:
    error = await tts_fails(make.tts("unauthorized"), API_KEY)
    assert not error.retryable
    assert "401" in str(error) and "invalid_api_key" in str(error)


async def test_rate_limit_is_retryable_with_retry_after_stand_in(make: _Made) -> None:
    error = await tts_fails(make.tts("rate-limited"), API_KEY)
    assert error.retryable and error.retry_after_s == RETRY_AFTER_S
    assert "429" in str(error)


async def test_retry_honours_retry_after_stand_in(make: _Made) -> None:
    sleeps = Sleeps()
    tts = ResilientTTS(make.tts("429-once"), retry_policy(sleeps), CircuitBreaker())
    audio = np.concatenate([chunk async for chunk in tts.synthesize("Hello.")])
    assert np.array_equal(audio, sine_speech("Hello.", 24_000))
    assert sleeps.delays == [SHORT_RETRY_AFTER_S]
    assert len(make.server.requests) == 2


async def test_server_error_is_retryable_stand_in(make: _Made) -> None:
    error = await tts_fails(make.tts("server-error"), API_KEY)
    assert error.retryable and "500" in str(error)


async def test_json_instead_of_audio_is_final_stand_in(make: _Made) -> None:
    error = await tts_fails(make.tts("json"), API_KEY)
    assert not error.retryable and "instead of PCM audio" in str(error)


async def test_mid_stream_disconnect_stand_in(make: _Made) -> None:
    got: list[Int16Array] = []
    error = await tts_fails(make.tts("disconnect"), API_KEY, got)
    assert error.retryable and "connection to" in str(error)
    assert sum(len(chunk) for chunk in got) <= 2400


async def test_audio_ending_mid_sample_is_an_error_stand_in(make: _Made) -> None:
    error = await tts_fails(make.tts("odd-total"), API_KEY)
    assert "middle of a sample" in str(error)


async def test_stalled_server_times_out_stand_in(make: _Made) -> None:
    started = time.monotonic()
    error = await tts_fails(make.tts("stall", timeout_s=0.3), API_KEY)
    assert error.retryable and "timed out" in str(error)
    assert time.monotonic() - started < 3


async def test_slow_first_byte_falls_back_to_the_next_engine_stand_in(make: _Made) -> None:
    slow = ResilientTTS(
        make.tts("slow-first-byte"),
        retry_policy(Sleeps(), attempts=1),
        CircuitBreaker(),
        timeout_s_first_byte=0.3,
    )
    chain = FallbackTTS([slow, make.tts("ok")])
    started = time.monotonic()
    audio = np.concatenate([chunk async for chunk in chain.synthesize("Hello.")])
    assert time.monotonic() - started < 1.5
    assert np.array_equal(audio, sine_speech("Hello.", 24_000))
    assert [request.scenario for request in make.server.requests] == ["slow-first-byte", "ok"]


async def test_connection_refused_is_retryable() -> None:
    settings = ElevenLabsSettings(
        provider="elevenlabs", base_url=closed_port_url(), api_key=API_KEY
    )
    tts = elevenlabs_tts.create(settings, models=None)
    try:
        error = await tts_fails(tts, API_KEY)
    finally:
        await tts.aclose()
    assert error.retryable and "cannot connect" in str(error)


async def test_dead_elevenlabs_falls_back_to_the_next_engine_in_a_turn(stand_in: StandIn) -> None:
    tts = {
        "provider": "elevenlabs",
        "base_url": stand_in.url("server-error"),
        "api_key": API_KEY,
        "retry": {"attempts": 2, "base_backoff_s": 0.01},
        "fallbacks": [{"provider": "standin"}],  # 16 kHz: resampled to ElevenLabs' 24 kHz
    }
    result = await spoken_turn_with({"tts": tts})
    assert result.errors == []
    assert result.reply_text == "Hello to you too."
    # The stand-in TTS speaks 200 ms per word: 4 words at 24 kHz, give or take the resampler.
    assert abs(len(result.pcm) - 4 * 4800) <= 48


async def test_failure_reaches_the_device_without_the_key_stand_in(stand_in: StandIn) -> None:
    tts = {"provider": "elevenlabs", "base_url": stand_in.url("unauthorized"), "api_key": API_KEY}
    result = await spoken_turn_with({"tts": tts})
    assert result.errors and result.errors[0].code is ErrorCode.TTS_FAILED
    assert "401" in result.errors[0].message
    assert all(API_KEY not in error.message for error in result.errors)


# ---------------------------------------------------------------------------------------------
# Configuration


def test_a_missing_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"elevenlabs TTS provider needs tts\.api_key"):
        elevenlabs_tts.create(ElevenLabsSettings(provider="elevenlabs"), models=None)


async def test_the_default_base_url_is_elevenlabs() -> None:
    settings = ElevenLabsSettings(provider="elevenlabs", api_key=API_KEY, voice="v/1")
    tts = elevenlabs_tts.create(settings, None)
    try:
        assert tts.url() == "https://api.elevenlabs.io/v1/text-to-speech/v%2F1/stream"
        assert tts.url("w") == "https://api.elevenlabs.io/v1/text-to-speech/w/stream"
    finally:
        await tts.aclose()


# ---------------------------------------------------------------------------------------------
# Live: the real service, only with a key

_LIVE_KEY = os.environ.get("ELEVENLABS_API_KEY")


@pytest.mark.skipif(not _LIVE_KEY, reason="ELEVENLABS_API_KEY is not set: no live ElevenLabs test")
async def test_live_elevenlabs_speaks() -> None:
    voice = os.environ.get("ELEVENLABS_VOICE_ID")
    settings = ElevenLabsSettings(
        provider="elevenlabs", api_key=_LIVE_KEY, **({"voice": voice} if voice else {})
    )
    tts = elevenlabs_tts.create(settings, None)
    try:
        audio = np.concatenate([chunk async for chunk in tts.synthesize("Hello there.")])
    finally:
        await tts.aclose()
    assert 0.3 * 24_000 < len(audio) < 5 * 24_000
    assert np.abs(audio).max() > 1000
