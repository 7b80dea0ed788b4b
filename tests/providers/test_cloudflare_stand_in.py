"""Cloudflare Workers AI STT (Whisper) and TTS (Deepgram Aura) against a local stand-in.

The stand-in speaks Workers AI's documented REST API: ``POST /client/v4/accounts/{account_id}/ai/
run/{model}`` with ``Authorization: Bearer <token>``. ``@cf/openai/whisper`` takes the audio file
as the body, ``@cf/openai/whisper-large-v3-turbo`` JSON ``{"audio": <base64>}``; both answer the
envelope ``{"result": {"text": ...}, "success": true, "errors": [], "messages": []}``.
``@cf/deepgram/aura-1`` takes JSON ``{"text": ..., "encoding": ..., ...}`` and answers the audio.
Errors are the envelope with ``"success": false``. Live tests run when ``CLOUDFLARE_API_TOKEN``
and ``CLOUDFLARE_ACCOUNT_ID`` are set.
"""

from __future__ import annotations

import base64
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
from voxgate.providers import cloudflare_stt, cloudflare_tts
from voxgate.providers.cloudflare_stt import CloudflareSTT, CloudflareSTTSettings
from voxgate.providers.cloudflare_tts import CloudflareTTS, CloudflareTTSSettings

API_TOKEN = "cf-test-3d7b1f9e2a"
ACCOUNT = "0123456789abcdef0123456789abcdef"
RUN_PATH = f"/client/v4/accounts/{ACCOUNT}/ai/run"
E2E_TRANSCRIPT = "What is two plus two?"

# ---------------------------------------------------------------------------------------------
# Stand-in


def _envelope(result: Any) -> str:
    return json.dumps({"result": result, "success": True, "errors": [], "messages": []})


def _error(status: int, message: str) -> str:
    code = {401: 10000, 429: 3040, 500: 3043}.get(status, 5006)
    errors = [{"code": code, "message": message}]
    return json.dumps({"result": None, "success": False, "errors": errors, "messages": []})


def _route(request: Request, exchange: Exchange, server: StandIn) -> None:
    if request.scenario == "unauthorized":  # a server echoing the token it rejected
        exchange.reply(401, _error(401, f"Authentication error: Bearer {API_TOKEN}"))
    elif common_fault(request, exchange, server, _error):
        pass
    elif not request.path.startswith(f"/{request.scenario}{RUN_PATH}/@cf/"):
        exchange.reply(404, _error(404, "No route for that URI"))
    elif request.headers.get("authorization", "").split(" ")[0] != "Bearer":
        exchange.reply(400, _error(400, "need a Bearer token"))
    elif request.path.endswith(("/@cf/openai/whisper", "/@cf/openai/whisper-large-v3-turbo")):
        _whisper(request, exchange)
    elif request.path.endswith("/@cf/deepgram/aura-1"):
        _aura(request, exchange, server)
    else:
        exchange.reply(400, _error(400, "No such model"))


def _read_wav(data: bytes) -> tuple[tuple[int, int, int], Int16Array]:
    with wave.open(io.BytesIO(data), "rb") as wav:
        frames = wav.readframes(wav.getnframes())
        layout = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
    return layout, np.frombuffer(frames, dtype="<i2").astype(np.int16)


def _whisper(request: Request, exchange: Exchange) -> None:
    audio = request.body
    if request.path.endswith("-large-v3-turbo"):
        audio = base64.b64decode(json.loads(request.body)["audio"])
    try:
        _, samples = _read_wav(audio)
    except (wave.Error, EOFError) as exc:
        exchange.reply(400, _error(400, f"Invalid audio: {exc}"))
        return
    if request.scenario == "malformed":
        exchange.reply(200, '{"result": {"tex')
    elif request.scenario == "failure-envelope":
        exchange.reply(200, _error(200, "AiError: inference failed"))
    else:
        text = E2E_TRANSCRIPT if request.scenario == "e2e" else f"heard {len(samples)} samples"
        result = {"text": f" {text}", "word_count": len(text.split()), "words": [], "vtt": ""}
        exchange.reply(200, _envelope(result))


def _aura(request: Request, exchange: Exchange, server: StandIn) -> None:
    body: Any = json.loads(request.body)
    if not isinstance(body.get("text"), str):
        exchange.reply(400, _error(400, "Type mismatch of '/text'"))
        return
    if body.get("encoding") != "linear16" or body.get("container") != "none":
        exchange.reply(200, b"ID3\x04fake-mp3", content_type="audio/mpeg")  # the default
        return
    pcm = sine_speech(body["text"], body.get("sample_rate", 24_000)).astype("<i2").tobytes()
    if request.scenario == "enveloped":
        exchange.reply(200, _envelope({"audio": base64.b64encode(pcm).decode()}))
    elif request.scenario == "json":
        exchange.reply(200, _envelope({"audio": "not base64!"}))
    elif request.scenario == "failure-envelope":
        exchange.reply(200, _error(200, "AiError: inference failed"))
    else:
        stream_audio(request, exchange, server, pcm, "audio/l16")


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    with serving(_route) as server:
        yield server


class _Made:
    def __init__(self, server: StandIn) -> None:
        self.server = server
        self.made: list[CloudflareSTT | CloudflareTTS] = []

    def _settings(self, scenario: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        base_url = self.server.url(scenario, RUN_PATH)
        return {"provider": "cloudflare", "base_url": base_url, "api_key": API_TOKEN, **kwargs}

    def stt(self, scenario: str, **kwargs: Any) -> CloudflareSTT:
        settings = CloudflareSTTSettings.model_validate(self._settings(scenario, kwargs))
        stt = cloudflare_stt.create(settings, models=None)
        self.made.append(stt)
        return stt

    def tts(self, scenario: str, **kwargs: Any) -> CloudflareTTS:
        settings = CloudflareTTSSettings.model_validate(self._settings(scenario, kwargs))
        tts = cloudflare_tts.create(settings, models=None)
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
    stt = make.stt("ok", extra_headers={"X-Tenant": "acme"})
    audio = utterance(0.5)
    assert await stt.transcribe(audio) == "heard 8000 samples"

    (request,) = make.server.requests
    assert request.path == f"/ok{RUN_PATH}/@cf/openai/whisper"
    assert request.query == {}
    assert request.headers["authorization"] == f"Bearer {API_TOKEN}"
    assert request.headers["content-type"] == "audio/wav"
    assert request.headers["x-tenant"] == "acme"
    layout, samples = _read_wav(request.body)
    assert layout == (1, 2, 16_000)
    assert np.abs(samples.astype(np.int32) - np.round(audio * 32767)).max() <= 1


async def test_stt_large_v3_turbo_sends_base64_json_stand_in(make: _Made) -> None:
    stt = make.stt("ok", model="@cf/openai/whisper-large-v3-turbo", language="fr")
    assert await stt.transcribe(utterance(0.25)) == "heard 4000 samples"
    (request,) = make.server.requests
    assert request.path.endswith("/@cf/openai/whisper-large-v3-turbo")
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.body)
    assert set(body) == {"audio", "language"} and body["language"] == "fr"
    assert _read_wav(base64.b64decode(body["audio"]))[0] == (1, 2, 16_000)


async def test_stt_unauthorized_is_final_and_hides_the_token_stand_in(make: _Made) -> None:
    error = await stt_fails(make.stt("unauthorized"), API_TOKEN)
    assert not error.retryable and "401" in str(error) and "Authentication error" in str(error)


async def test_stt_rate_limit_is_retryable_with_retry_after_stand_in(make: _Made) -> None:
    error = await stt_fails(make.stt("rate-limited"), API_TOKEN)
    assert error.retryable and error.retry_after_s == RETRY_AFTER_S


async def test_stt_retry_honours_retry_after_stand_in(make: _Made) -> None:
    sleeps = Sleeps()
    stt = ResilientSTT(make.stt("429-once"), retry_policy(sleeps), CircuitBreaker())
    assert await stt.transcribe(utterance(0.25)) == "heard 4000 samples"
    assert sleeps.delays == [SHORT_RETRY_AFTER_S] and len(make.server.requests) == 2


async def test_stt_server_error_is_retryable_stand_in(make: _Made) -> None:
    error = await stt_fails(make.stt("server-error"), API_TOKEN)
    assert error.retryable and "500" in str(error)


async def test_stt_malformed_answer_is_final_stand_in(make: _Made) -> None:
    error = await stt_fails(make.stt("malformed"), API_TOKEN)
    assert not error.retryable and "malformed" in str(error)


async def test_stt_failure_in_a_200_envelope_is_an_error_stand_in(make: _Made) -> None:
    error = await stt_fails(make.stt("failure-envelope"), API_TOKEN)
    assert not error.retryable and "inference failed" in str(error)


async def test_stt_stalled_server_times_out_stand_in(make: _Made) -> None:
    started = time.monotonic()
    error = await stt_fails(make.stt("stall", timeout_s=0.3), API_TOKEN)
    assert error.retryable and "timed out" in str(error)
    assert time.monotonic() - started < 3


async def test_stt_dead_cloudflare_falls_back_to_the_next_engine_stand_in(make: _Made) -> None:
    settings = CloudflareSTTSettings(
        provider="cloudflare", base_url=closed_port_url(), api_key=API_TOKEN
    )
    dead_stt = cloudflare_stt.create(settings, None)
    make.made.append(dead_stt)
    dead = ResilientSTT(dead_stt, retry_policy(Sleeps(), attempts=2), CircuitBreaker())
    chain = FallbackSTT([dead, make.stt("e2e")])
    assert await chain.transcribe(utterance()) == E2E_TRANSCRIPT


async def test_stt_failure_reaches_the_device_without_the_token_stand_in(
    stand_in: StandIn,
) -> None:
    stt = {
        "provider": "cloudflare",
        "base_url": stand_in.url("unauthorized", RUN_PATH),
        "api_key": API_TOKEN,
    }
    result = await spoken_turn_with({"stt": stt})
    (error,) = result.errors
    assert error.code is ErrorCode.STT_FAILED
    assert "401" in error.message and API_TOKEN not in error.message


# ---------------------------------------------------------------------------------------------
# Text to speech


async def test_tts_request_shape_and_odd_chunks_reassemble_exactly_stand_in(make: _Made) -> None:
    tts = make.tts("ok", voice="luna")
    text = "The quick brown fox jumps over the lazy dog."
    chunks = [chunk async for chunk in tts.synthesize(text)]

    assert tts.sample_rate_hz == 24_000
    audio = np.concatenate(chunks)
    assert len(audio) == 24_000 * 20 // 1000 * len(text)
    assert np.array_equal(audio, sine_speech(text, 24_000))
    assert len(chunks) > 1 and all(len(chunk) >= 1200 for chunk in chunks[:-1])

    (request,) = make.server.requests
    assert request.path == f"/ok{RUN_PATH}/@cf/deepgram/aura-1"
    assert request.headers["authorization"] == f"Bearer {API_TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {
        "text": text,
        "encoding": "linear16",
        "container": "none",
        "sample_rate": 24_000,
        "speaker": "luna",
    }


async def test_tts_without_a_voice_leaves_the_speaker_to_cloudflare_stand_in(
    make: _Made,
) -> None:
    assert [chunk async for chunk in make.tts("ok").synthesize("Hi.")]
    (request,) = make.server.requests
    assert "speaker" not in json.loads(request.body)


async def test_tts_audio_in_a_json_envelope_is_decoded_stand_in(make: _Made) -> None:
    audio = np.concatenate([chunk async for chunk in make.tts("enveloped").synthesize("Hello.")])
    assert np.array_equal(audio, sine_speech("Hello.", 24_000))


@pytest.mark.parametrize(
    ("scenario", "says"),
    [("json", "without PCM audio"), ("failure-envelope", "inference failed")],
)
async def test_tts_json_without_audio_is_final_stand_in(
    make: _Made, scenario: str, says: str
) -> None:
    error = await tts_fails(make.tts(scenario), API_TOKEN)
    assert not error.retryable and says in str(error)


async def test_tts_yields_audio_before_the_reply_is_complete_stand_in(make: _Made) -> None:
    await audio_comes_before_the_reply_is_complete(make.tts("gated"), make.server)


async def test_tts_of_blank_text_makes_no_request_stand_in(make: _Made) -> None:
    assert [chunk async for chunk in make.tts("ok").synthesize("")] == []
    assert make.server.requests == []


async def test_tts_unauthorized_is_final_and_hides_the_token_stand_in(make: _Made) -> None:
    error = await tts_fails(make.tts("unauthorized"), API_TOKEN)
    assert not error.retryable and "401" in str(error)


async def test_tts_retry_honours_retry_after_stand_in(make: _Made) -> None:
    sleeps = Sleeps()
    tts = ResilientTTS(make.tts("429-once"), retry_policy(sleeps), CircuitBreaker())
    audio = np.concatenate([chunk async for chunk in tts.synthesize("Hello.")])
    assert np.array_equal(audio, sine_speech("Hello.", 24_000))
    assert sleeps.delays == [SHORT_RETRY_AFTER_S] and len(make.server.requests) == 2


async def test_tts_server_error_is_retryable_stand_in(make: _Made) -> None:
    error = await tts_fails(make.tts("server-error"), API_TOKEN)
    assert error.retryable and "500" in str(error)


async def test_tts_mid_stream_disconnect_stand_in(make: _Made) -> None:
    got: list[Int16Array] = []
    error = await tts_fails(make.tts("disconnect"), API_TOKEN, got)
    assert error.retryable and "connection to" in str(error)
    assert sum(len(chunk) for chunk in got) <= 2400


async def test_tts_audio_ending_mid_sample_is_an_error_stand_in(make: _Made) -> None:
    error = await tts_fails(make.tts("odd-total"), API_TOKEN)
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


async def test_tts_dead_cloudflare_falls_back_in_a_spoken_turn(stand_in: StandIn) -> None:
    tts = {
        "provider": "cloudflare",
        "base_url": closed_port_url(RUN_PATH),
        "api_key": API_TOKEN,
        "retry": {"attempts": 2, "base_backoff_s": 0.01},
        "fallbacks": [{"provider": "standin"}],
    }
    result = await spoken_turn_with({"tts": tts})
    assert result.errors == [] and result.reply_text == "Hello to you too."
    assert abs(len(result.pcm) - 4 * 4800) <= 48  # the stand-in's 4 words, resampled to 24 kHz


# ---------------------------------------------------------------------------------------------
# Configuration


def test_base_url_and_token_are_required() -> None:
    with pytest.raises(
        ConfigError, match=r"cloudflare STT provider needs stt\.base_url.*/accounts/"
    ):
        cloudflare_stt.create(CloudflareSTTSettings(provider="cloudflare", api_key=API_TOKEN), None)
    with pytest.raises(ConfigError, match=r"cloudflare TTS provider needs tts\.api_key"):
        cloudflare_tts.create(
            CloudflareTTSSettings(
                provider="cloudflare", base_url=f"https://api.cloudflare.com{RUN_PATH}"
            ),
            None,
        )


# ---------------------------------------------------------------------------------------------
# Live: the real service, only with a token and an account

_LIVE_TOKEN = os.environ.get("CLOUDFLARE_API_TOKEN")
_LIVE_ACCOUNT = os.environ.get("CLOUDFLARE_ACCOUNT_ID")
live = pytest.mark.skipif(
    not (_LIVE_TOKEN and _LIVE_ACCOUNT),
    reason="CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID are not set: no live Workers AI test",
)


def _live(section: type[CloudflareSTTSettings] | type[CloudflareTTSSettings]) -> Any:
    base_url = f"https://api.cloudflare.com/client/v4/accounts/{_LIVE_ACCOUNT}/ai/run"
    return section(provider="cloudflare", base_url=base_url, api_key=_LIVE_TOKEN)


@live
async def test_live_cloudflare_transcribes_the_sample_question() -> None:
    samples, rate = read_wav(Path(voxgate.__file__).parent / "samples" / "question.wav")
    stt = cloudflare_stt.create(_live(CloudflareSTTSettings), None)
    try:
        text = await stt.transcribe(int16_to_float(resample(samples, rate, 16_000)))
    finally:
        await stt.aclose()
    assert "capital" in text.lower() and "france" in text.lower()


@live
async def test_live_cloudflare_speaks() -> None:
    tts = cloudflare_tts.create(_live(CloudflareTTSSettings), None)
    try:
        audio = np.concatenate([chunk async for chunk in tts.synthesize("Hello there.")])
    finally:
        await tts.aclose()
    assert 0.3 * 24_000 < len(audio) < 5 * 24_000
    assert np.abs(audio).max() > 1000
