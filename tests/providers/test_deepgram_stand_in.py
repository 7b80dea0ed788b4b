"""Deepgram STT (pre-recorded ``/v1/listen``) and Aura TTS (``/v1/speak``) against a local stand-in.

The stand-in speaks Deepgram's documented REST API: ``Authorization: Token <key>``; ``/v1/listen``
takes the audio file as the body with options in the query and answers
``{"metadata": ..., "results": {"channels": [{"alternatives": [{"transcript": ...}]}]}}``;
``/v1/speak`` takes ``{"text": ...}`` and, asked for ``encoding=linear16&container=none``, streams
headerless PCM16. Errors are ``{"err_code": ..., "err_msg": ..., "request_id": ...}``. Live tests
against the real service run when ``DEEPGRAM_API_KEY`` is set.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

import voxgate
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
    stt_fails,
    tts_fails,
    utterance,
)
from voxgate.core.audio import int16_to_float, read_wav, resample
from voxgate.core.capabilities import Int16Array
from voxgate.core.errors import ConfigError, ErrorCode
from voxgate.pipeline.fallback import FallbackSTT, FallbackTTS
from voxgate.pipeline.resilience import CircuitBreaker, ResilientSTT, ResilientTTS
from voxgate.providers import deepgram_stt, deepgram_tts
from voxgate.providers.deepgram_stt import DeepgramSTT, DeepgramSTTSettings
from voxgate.providers.deepgram_tts import DeepgramTTS, DeepgramTTSSettings

API_KEY = "dg-test-5c1d9e3a7b"
E2E_TRANSCRIPT = "What is two plus two?"

# ---------------------------------------------------------------------------------------------
# Stand-in


def _error(status: int, message: str) -> str:
    codes = {401: "INVALID_AUTH", 429: "TOO_MANY_REQUESTS", 500: "INTERNAL_SERVER_ERROR"}
    return json.dumps(
        {"err_code": codes.get(status, "Bad Request"), "err_msg": message, "request_id": "r-1"}
    )


def _route(request: Request, exchange: Exchange, server: StandIn) -> None:
    if request.scenario == "unauthorized":  # a server echoing the key it rejected
        exchange.reply(401, _error(401, f"Invalid credentials: Token {API_KEY}"))
    elif common_fault(request, exchange, server, _error):
        pass
    elif request.path.endswith("/v1/listen"):
        _listen(request, exchange)
    elif request.path.endswith("/v1/speak"):
        _speak(request, exchange, server)
    else:
        exchange.reply(404, _error(404, "no such route"))


def _read_wav(data: bytes) -> tuple[tuple[int, int, int], Int16Array]:
    with wave.open(io.BytesIO(data), "rb") as wav:
        frames = wav.readframes(wav.getnframes())
        layout = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
    return layout, np.frombuffer(frames, dtype="<i2").astype(np.int16)


def _listen(request: Request, exchange: Exchange) -> None:
    try:
        layout, samples = _read_wav(request.body)
    except (wave.Error, EOFError) as exc:
        exchange.reply(400, _error(400, f"corrupt or unsupported data: {exc}"))
        return
    if request.headers.get("authorization", "").split(" ")[0] != "Token" or layout[:2] != (1, 2):
        exchange.reply(400, _error(400, "need Token auth and mono PCM16"))
        return
    if request.scenario == "malformed":
        exchange.reply(200, '{"metadata": {}, "results": {"channels": [{"alternat')
        return
    if request.scenario == "no-channels":
        exchange.reply(200, '{"metadata": {}, "results": {"channels": []}}')
        return
    transcript = {
        "e2e": E2E_TRANSCRIPT,
        "silence": "",
    }.get(request.scenario, f"heard {len(samples)} samples at {layout[2]} Hz")
    alternative = {"transcript": transcript, "confidence": 0.98, "words": []}
    exchange.reply(
        200,
        json.dumps(
            {
                "metadata": {"request_id": "r-1", "duration": len(samples) / layout[2]},
                "results": {"channels": [{"alternatives": [alternative]}]},
            }
        ),
    )


def _speak(request: Request, exchange: Exchange, server: StandIn) -> None:
    body: Any = json.loads(request.body)
    if (
        request.param("encoding") != "linear16"
        or request.param("container") != "none"
        or not isinstance(body.get("text"), str)
    ):
        exchange.reply(400, _error(400, "bad speak request"))
        return
    if request.scenario == "json":  # a server that ignored the encoding
        exchange.reply(200, '{"audio": "SUQz"}')
        return
    rate = int(request.param("sample_rate") or "24000")
    pcm = sine_speech(body["text"], rate).astype("<i2").tobytes()
    stream_audio(request, exchange, server, pcm, "audio/l16")


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    with serving(_route) as server:
        yield server


class _Made:
    def __init__(self, server: StandIn) -> None:
        self.server = server
        self.made: list[DeepgramSTT | DeepgramTTS] = []

    def stt(self, scenario: str, **kwargs: Any) -> DeepgramSTT:
        settings = DeepgramSTTSettings.model_validate(
            {
                "provider": "deepgram",
                "base_url": self.server.url(scenario),
                "api_key": API_KEY,
                **kwargs,
            }
        )
        stt = deepgram_stt.create(settings, models=None)
        self.made.append(stt)
        return stt

    def tts(self, scenario: str, **kwargs: Any) -> DeepgramTTS:
        settings = DeepgramTTSSettings.model_validate(
            {
                "provider": "deepgram",
                "base_url": self.server.url(scenario),
                "api_key": API_KEY,
                **kwargs,
            }
        )
        tts = deepgram_tts.create(settings, models=None)
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
# Speech to text


async def test_stt_request_shape_and_transcript_stand_in(make: _Made) -> None:
    stt = make.stt("ok", model="nova-2", language="de", extra_headers={"X-Tenant": "acme"})
    audio = utterance(0.5)
    assert await stt.transcribe(audio) == "heard 8000 samples at 16000 Hz"

    (request,) = make.server.requests
    assert request.method == "POST"
    assert request.path == "/ok/v1/listen"
    assert request.query == {"model": ["nova-2"], "language": ["de"], "smart_format": ["true"]}
    assert request.headers["authorization"] == f"Token {API_KEY}"
    assert request.headers["content-type"] == "audio/wav"
    assert request.headers["accept"] == "application/json"
    assert request.headers["x-tenant"] == "acme"
    layout, samples = _read_wav(request.body)
    assert layout == (1, 2, 16_000)
    expected = np.round(audio * 32767).astype(np.int16)
    assert np.abs(samples.astype(np.int32) - expected).max() <= 1


async def test_stt_defaults_to_nova_3_and_omits_an_unset_language_stand_in(make: _Made) -> None:
    stt = make.stt("ok", language=None)
    assert await stt.transcribe(utterance(0.25)) == "heard 4000 samples at 16000 Hz"
    (request,) = make.server.requests
    assert request.query == {"model": ["nova-3"], "smart_format": ["true"]}


async def test_stt_of_silence_is_empty_stand_in(make: _Made) -> None:
    assert await make.stt("silence").transcribe(utterance()) == ""
    assert await make.stt("ok").transcribe(np.zeros(0, dtype=np.float32)) == ""
    assert len(make.server.requests) == 1  # no audio, no request


async def test_stt_unauthorized_is_final_and_hides_the_key_stand_in(make: _Made) -> None:
    error = await stt_fails(make.stt("unauthorized"), API_KEY)
    assert not error.retryable
    assert "401" in str(error) and "Invalid credentials" in str(error)


async def test_stt_rate_limit_is_retryable_with_retry_after_stand_in(make: _Made) -> None:
    error = await stt_fails(make.stt("rate-limited"), API_KEY)
    assert error.retryable and error.retry_after_s == RETRY_AFTER_S
    assert "429" in str(error)


async def test_stt_retry_honours_retry_after_stand_in(make: _Made) -> None:
    sleeps = Sleeps()
    stt = ResilientSTT(make.stt("429-once"), retry_policy(sleeps), CircuitBreaker())
    assert await stt.transcribe(utterance(0.25)) == "heard 4000 samples at 16000 Hz"
    assert sleeps.delays == [SHORT_RETRY_AFTER_S]
    assert len(make.server.requests) == 2


async def test_stt_server_error_is_retryable_stand_in(make: _Made) -> None:
    error = await stt_fails(make.stt("server-error"), API_KEY)
    assert error.retryable and "500" in str(error)


@pytest.mark.parametrize("scenario", ["malformed", "no-channels"])
async def test_stt_malformed_answer_is_final_stand_in(make: _Made, scenario: str) -> None:
    error = await stt_fails(make.stt(scenario), API_KEY)
    assert not error.retryable and "malformed" in str(error)


async def test_stt_stalled_server_times_out_stand_in(make: _Made) -> None:
    started = time.monotonic()
    error = await stt_fails(make.stt("stall", timeout_s=0.3), API_KEY)
    assert error.retryable and "timed out" in str(error)
    assert time.monotonic() - started < 3


async def test_stt_connection_refused_is_retryable() -> None:
    settings = DeepgramSTTSettings(provider="deepgram", base_url=closed_port_url(), api_key=API_KEY)
    stt = deepgram_stt.create(settings, models=None)
    try:
        error = await stt_fails(stt, API_KEY)
    finally:
        await stt.aclose()
    assert error.retryable and "cannot connect" in str(error)


async def test_stt_dead_deepgram_falls_back_to_the_next_engine_stand_in(make: _Made) -> None:
    dead = ResilientSTT(
        make.stt("server-error"), retry_policy(Sleeps(), attempts=2), CircuitBreaker(1, 60)
    )
    chain = FallbackSTT([dead, make.stt("e2e")])
    assert await chain.transcribe(utterance()) == E2E_TRANSCRIPT
    assert await chain.transcribe(utterance()) == E2E_TRANSCRIPT
    scenarios = [request.scenario for request in make.server.requests]
    # One failure opened the dead engine's breaker: the second turn skips it without a request.
    assert scenarios == ["server-error", "e2e", "e2e"]


async def test_stt_failure_reaches_the_device_without_the_key_stand_in(
    stand_in: StandIn,
) -> None:
    stand_in.reset()
    stt = {"provider": "deepgram", "base_url": stand_in.url("unauthorized"), "api_key": API_KEY}
    result = await spoken_turn_with({"stt": stt})
    (error,) = result.errors
    assert error.code is ErrorCode.STT_FAILED
    assert "401" in error.message and API_KEY not in error.message
    assert len(stand_in.requests) == 1  # 401 is final: not retried


# ---------------------------------------------------------------------------------------------
# Text to speech


async def test_tts_request_shape_and_odd_chunks_reassemble_exactly_stand_in(make: _Made) -> None:
    tts = make.tts("ok", extra_headers={"X-Tenant": "acme"})
    text = "The quick brown fox jumps over the lazy dog."
    chunks = [chunk async for chunk in tts.synthesize(text)]

    assert tts.sample_rate_hz == 24_000
    assert all(chunk.dtype == np.int16 for chunk in chunks)
    audio = np.concatenate(chunks)
    assert len(audio) == 24_000 * 20 // 1000 * len(text)  # the stand-in's 20 ms per character
    assert np.array_equal(audio, sine_speech(text, 24_000))
    assert len(chunks) > 1 and all(len(chunk) >= 1200 for chunk in chunks[:-1])  # 50 ms

    (request,) = make.server.requests
    assert request.path == "/ok/v1/speak"
    assert request.query == {
        "model": ["aura-2-thalia-en"],
        "encoding": ["linear16"],
        "sample_rate": ["24000"],
        "container": ["none"],
    }
    assert request.headers["authorization"] == f"Token {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-tenant"] == "acme"
    assert json.loads(request.body) == {"text": text}


async def test_tts_uses_the_configured_model_stand_in(make: _Made) -> None:
    assert [chunk async for chunk in make.tts("ok", model="aura-2-zeus-en").synthesize("Hi.")]
    (request,) = make.server.requests
    assert request.param("model") == "aura-2-zeus-en"


async def test_tts_yields_audio_before_the_reply_is_complete_stand_in(make: _Made) -> None:
    await audio_comes_before_the_reply_is_complete(make.tts("gated"), make.server)


async def test_tts_of_blank_text_makes_no_request_stand_in(make: _Made) -> None:
    assert [chunk async for chunk in make.tts("ok").synthesize(" \n")] == []
    assert make.server.requests == []


async def test_tts_unauthorized_is_final_and_hides_the_key_stand_in(make: _Made) -> None:
    error = await tts_fails(make.tts("unauthorized"), API_KEY)
    assert not error.retryable and "401" in str(error)


async def test_tts_rate_limit_is_retryable_with_retry_after_stand_in(make: _Made) -> None:
    error = await tts_fails(make.tts("rate-limited"), API_KEY)
    assert error.retryable and error.retry_after_s == RETRY_AFTER_S
    assert "429" in str(error)


async def test_tts_retry_honours_retry_after_stand_in(make: _Made) -> None:
    sleeps = Sleeps()
    tts = ResilientTTS(make.tts("429-once"), retry_policy(sleeps), CircuitBreaker())
    audio = np.concatenate([chunk async for chunk in tts.synthesize("Hello.")])
    assert np.array_equal(audio, sine_speech("Hello.", 24_000))
    assert sleeps.delays == [SHORT_RETRY_AFTER_S]
    assert len(make.server.requests) == 2


async def test_a_long_retry_after_gives_up_at_once_stand_in(make: _Made) -> None:
    sleeps = Sleeps()
    tts = ResilientTTS(make.tts("rate-limited"), retry_policy(sleeps), CircuitBreaker())
    error = await tts_fails(tts, API_KEY)
    assert error.retry_after_s == RETRY_AFTER_S  # above max_backoff_s: no wait, no retry
    assert sleeps.delays == [] and len(make.server.requests) == 1


async def test_tts_server_error_is_retryable_stand_in(make: _Made) -> None:
    error = await tts_fails(make.tts("server-error"), API_KEY)
    assert error.retryable and "500" in str(error)


async def test_tts_json_instead_of_audio_is_final_stand_in(make: _Made) -> None:
    error = await tts_fails(make.tts("json"), API_KEY)
    assert not error.retryable and "instead of PCM audio" in str(error)


async def test_tts_mid_stream_disconnect_stand_in(make: _Made) -> None:
    got: list[Int16Array] = []
    error = await tts_fails(make.tts("disconnect"), API_KEY, got)
    assert error.retryable and "connection to" in str(error)
    assert sum(len(chunk) for chunk in got) <= 2400  # what came before the cut, whole samples


async def test_tts_audio_ending_mid_sample_is_an_error_stand_in(make: _Made) -> None:
    error = await tts_fails(make.tts("odd-total"), API_KEY)
    assert "middle of a sample" in str(error)


async def test_tts_slow_first_byte_falls_back_to_the_next_engine_stand_in(make: _Made) -> None:
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


async def test_tts_connection_refused_is_retryable() -> None:
    settings = DeepgramTTSSettings(provider="deepgram", base_url=closed_port_url(), api_key=API_KEY)
    tts = deepgram_tts.create(settings, models=None)
    try:
        error = await tts_fails(tts, API_KEY)
    finally:
        await tts.aclose()
    assert error.retryable and "cannot connect" in str(error)


async def test_tts_early_close_drops_the_connection_stand_in(make: _Made) -> None:
    chunks = make.tts("endless-aclose").synthesize("Never ending.")
    lengths = [len(await anext(chunks)) for _ in range(3)]
    assert min(lengths) >= 1200  # 50 ms at 24 kHz
    await chunks.aclose()  # type: ignore[attr-defined]
    seen = await asyncio.to_thread(make.server.disconnects.get, True, 2.0)
    assert seen == "endless-aclose"


async def test_tts_dead_deepgram_falls_back_in_a_spoken_turn(stand_in: StandIn) -> None:
    tts = {
        "provider": "deepgram",
        "base_url": closed_port_url(),
        "api_key": API_KEY,
        "retry": {"attempts": 2, "base_backoff_s": 0.01},
        "fallbacks": [{"provider": "deepgram", "base_url": stand_in.url("e2e"), "api_key": "k"}],
    }
    result = await spoken_turn_with({"tts": tts})
    assert result.errors == []
    assert result.reply_text == "Hello to you too."
    assert np.array_equal(result.pcm, sine_speech("Hello to you too.", 24_000))


async def test_tts_failure_reaches_the_device_without_the_key_stand_in(
    stand_in: StandIn,
) -> None:
    stand_in.reset()
    tts = {
        "provider": "deepgram",
        "base_url": stand_in.url("server-error"),
        "api_key": API_KEY,
        "retry": {"attempts": 2, "base_backoff_s": 0.01},
    }
    result = await spoken_turn_with({"tts": tts})
    assert result.errors and result.errors[0].code is ErrorCode.TTS_FAILED
    assert all(API_KEY not in error.message for error in result.errors)
    assert "500" in result.errors[0].message
    assert len(stand_in.requests) >= 2  # retried before giving up


# ---------------------------------------------------------------------------------------------
# Configuration


def test_a_missing_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"deepgram STT provider needs stt\.api_key"):
        deepgram_stt.create(DeepgramSTTSettings(provider="deepgram"), models=None)
    with pytest.raises(ConfigError, match=r"deepgram TTS provider needs tts\.api_key"):
        deepgram_tts.create(
            DeepgramTTSSettings(provider="deepgram", api_key=SecretStr("")), models=None
        )


async def test_the_default_base_url_is_deepgrams() -> None:
    stt = deepgram_stt.create(
        DeepgramSTTSettings(provider="deepgram", api_key=API_KEY), models=None
    )
    tts = deepgram_tts.create(
        DeepgramTTSSettings(provider="deepgram", api_key=API_KEY), models=None
    )
    try:
        assert stt._url == "https://api.deepgram.com/v1/listen"
        assert tts._url == "https://api.deepgram.com/v1/speak"
    finally:
        await stt.aclose()
        await tts.aclose()


def test_a_base_url_without_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="http"):
        deepgram_tts.create(
            DeepgramTTSSettings(provider="deepgram", base_url="api.deepgram.com", api_key=API_KEY),
            None,
        )


# ---------------------------------------------------------------------------------------------
# Live: the real service, only with a key

_LIVE_KEY = os.environ.get("DEEPGRAM_API_KEY")
live = pytest.mark.skipif(
    not _LIVE_KEY, reason="DEEPGRAM_API_KEY is not set: no live Deepgram test"
)


@live
async def test_live_deepgram_transcribes_the_sample_question() -> None:
    samples, rate = read_wav(Path(voxgate.__file__).parent / "samples" / "question.wav")
    stt = deepgram_stt.create(DeepgramSTTSettings(provider="deepgram", api_key=_LIVE_KEY), None)
    try:
        text = await stt.transcribe(int16_to_float(resample(samples, rate, 16_000)))
    finally:
        await stt.aclose()
    assert "capital" in text.lower() and "france" in text.lower()


@live
async def test_live_deepgram_speaks() -> None:
    tts = deepgram_tts.create(DeepgramTTSSettings(provider="deepgram", api_key=_LIVE_KEY), None)
    try:
        audio = np.concatenate([chunk async for chunk in tts.synthesize("Hello there.")])
    finally:
        await tts.aclose()
    assert 0.3 * 24_000 < len(audio) < 5 * 24_000
    assert np.abs(audio).max() > 1000
