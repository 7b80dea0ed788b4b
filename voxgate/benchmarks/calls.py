"""One timed, priced call to an engine of each capability, and the figures its calls add up to.

Each call runs inside its own usage meter, so its cost is what the turn engine would bill for it
(voxgate/pipeline/metering.py). A call returns one sample: a flat dict that goes to the JSON file
as is, and that the ``summarise_*`` functions turn into an engine's figures.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from voxgate.core.audio import int16_to_float, read_wav, resample
from voxgate.core.capabilities import (
    ChatMessage,
    Float32Array,
    Int16Array,
    LanguageModel,
    SpeechToText,
    TextToSpeech,
)
from voxgate.core.errors import VoxgateError
from voxgate.core.usage import UsageMeter, metering
from voxgate.evaluation import word_errors
from voxgate.speech_corpus import Clip

Sample = dict[str, Any]
Figures = dict[str, float | None]

ENGINE_ERRORS = (VoxgateError, ImportError, OSError, TimeoutError)
"""What an engine may fail with; anything else is a bug and should surface as one."""


def clip_audio(clip: Clip, rate_hz: int) -> Float32Array:
    samples, rate = read_wav(clip.path)
    return int16_to_float(resample(samples, rate, rate_hz))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


def _median(values: list[float], digits: int = 1) -> float | None:
    return round(float(np.median(values)), digits) if values else None


def _p95(values: list[float]) -> float | None:
    return round(float(np.percentile(values, 95)), 1) if values else None


def _mean(values: list[float], digits: int = 8) -> float | None:
    return round(float(np.mean(values)), digits) if values else None


def _present(samples: list[Sample], key: str) -> list[float]:
    return [float(s[key]) for s in samples if s.get(key) is not None]


def _rate(errors: list[float], words: list[float]) -> float | None:
    return round(sum(errors) / sum(words), 4) if sum(words) else None


# --- STT ---------------------------------------------------------------------------------------


async def transcribe(stt: SpeechToText, clip: Clip, audio: Float32Array) -> Sample:
    with metering(UsageMeter()) as meter:
        started = time.perf_counter()
        text = await stt.transcribe(audio)
        elapsed = time.perf_counter() - started
    errors, words = word_errors(clip.transcript, text)
    return {
        "clip": clip.name,
        "transcript_ms": _ms(elapsed),
        "text": text,
        "word_errors": errors,
        "words": words,
        "cost_usd": meter.cost_usd,
    }


def summarise_stt(samples: list[Sample]) -> Figures:
    times = _present(samples, "transcript_ms")
    return {
        "transcript_median_ms": _median(times),
        "transcript_p95_ms": _p95(times),
        "wer": _rate(_present(samples, "word_errors"), _present(samples, "words")),
        "cost_per_clip_usd": _mean(_present(samples, "cost_usd")),
    }


# --- LLM ---------------------------------------------------------------------------------------


async def reply(llm: LanguageModel, system_prompt: str, prompt: str) -> Sample:
    messages = [ChatMessage("system", system_prompt), ChatMessage("user", prompt)]
    pieces: list[str] = []
    first_s: float | None = None
    with metering(UsageMeter()) as meter:
        started = time.perf_counter()
        async for piece in llm.stream_reply(messages):
            if not isinstance(piece, str):
                continue  # a tool call: no text
            if first_s is None and piece:
                first_s = time.perf_counter() - started
            pieces.append(piece)
        total_s = time.perf_counter() - started
    tokens_out = sum(record.tokens_out for record in meter.records)
    # Decoding speed: the tokens after the first over the time they took (prefill excluded).
    decoding_s = total_s - first_s if first_s is not None else 0.0
    rate = (tokens_out - 1) / decoding_s if tokens_out > 1 and decoding_s > 0 else None
    return {
        "prompt": prompt,
        "reply": "".join(pieces),
        "first_token_ms": _ms(first_s),
        "total_ms": _ms(total_s),
        "tokens_out": tokens_out,
        "tokens_estimated": any(record.tokens_estimated for record in meter.records),
        "tokens_per_s": None if rate is None else round(rate, 2),
        "cost_usd": meter.cost_usd,
    }


def summarise_llm(samples: list[Sample]) -> Figures:
    first = _present(samples, "first_token_ms")
    rates = _present(samples, "tokens_per_s")
    return {
        "first_token_median_ms": _median(first),
        "first_token_p95_ms": _p95(first),
        "total_median_ms": _median(_present(samples, "total_ms")),
        "tokens_per_s": _median(rates),
        "cost_per_reply_usd": _mean(_present(samples, "cost_usd")),
        "reply_chars": _mean([len(s["reply"]) for s in samples], 1),
    }


# --- TTS ---------------------------------------------------------------------------------------


async def speak(tts: TextToSpeech, sentence: str, judge: SpeechToText | None) -> Sample:
    chunks: list[Int16Array] = []
    first_s: float | None = None
    with metering(UsageMeter()) as meter:
        started = time.perf_counter()
        async for chunk in tts.synthesize(sentence):
            if first_s is None and len(chunk):
                first_s = time.perf_counter() - started
            chunks.append(chunk)
        total_s = time.perf_counter() - started
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    audio_s = len(pcm) / tts.sample_rate_hz
    # Listened to after the clock stopped: the judge's time is not the engine's.
    heard = await _listen(judge, pcm, tts.sample_rate_hz)
    errors, words = word_errors(sentence, heard) if heard is not None else (None, None)
    return {
        "sentence": sentence,
        "characters": len(sentence),
        "first_audio_ms": _ms(first_s),
        "total_ms": _ms(total_s),
        "audio_s": round(audio_s, 3),
        "real_time_factor": round(total_s / audio_s, 6) if audio_s else None,
        "heard": heard,
        "word_errors": errors,
        "words": words,
        "cost_usd": meter.cost_usd,
    }


async def _listen(judge: SpeechToText | None, pcm: Int16Array, rate_hz: int) -> str | None:
    """What the judge hears in ``pcm``; None without a judge, or when the judge fails (the
    engine under test did nothing wrong then)."""
    if judge is None:
        return None
    try:
        return await judge.transcribe(int16_to_float(resample(pcm, rate_hz, judge.sample_rate_hz)))
    except ENGINE_ERRORS:
        return None


def summarise_tts(samples: list[Sample]) -> Figures:
    first = _present(samples, "first_audio_ms")
    costs = _present(samples, "cost_usd")
    characters = sum(_present(samples, "characters"))
    return {
        "first_audio_median_ms": _median(first),
        "first_audio_p95_ms": _p95(first),
        "total_median_ms": _median(_present(samples, "total_ms")),
        "real_time_factor": _median(_present(samples, "real_time_factor"), 4),
        "cost_per_sentence_usd": _mean(costs),
        # Per character too, so a turn's cost can be estimated for a reply of any length.
        "cost_per_char_usd": round(sum(costs) / characters, 10) if characters else None,
        "intelligibility_wer": _rate(_present(samples, "word_errors"), _present(samples, "words")),
    }
