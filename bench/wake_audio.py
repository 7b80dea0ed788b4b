"""Audio for the wake-word benchmark, made on the spot (nothing is kept): the wake word in many
voices, speech without it, noise and music-like sound, and how they are mixed.

Voices: Debian's flite (4 voices) and espeak-ng (4 accents at 3 speeds), and the Piper voice
voxgate speaks with (en_US-joe-medium, from the model store). Speech without the wake word:
LibriVox clips from pocketsphinx-testdata (real people), and the same synthesizers reading their
transcripts and everyday questions.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxgate.core import registry
from voxgate.core.audio import read_wav, resample
from voxgate.core.capabilities import Int16Array
from voxgate.core.engine_settings import engine_settings
from voxgate.models import ModelStore
from voxgate.speech_corpus import librivox_clips, synthesized

RATE_HZ = 16_000
FLITE = [("flite", voice, 0) for voice in ("rms", "awb", "kal16", "slt")]
ESPEAK = [
    ("espeak-ng", voice, speed)
    for voice in ("en-us", "en-gb", "en-gb-scotland", "en-029")
    for speed in (140, 175, 210)
]
PHRASES = (
    "Hey Jarvis.",
    "Hey Jarvis, what time is it?",
    "Hey Jarvis, what is two plus three?",
)
OTHER_TALK = (
    "What is the weather like tomorrow morning?",
    "Could you put the kettle on, please?",
    "I think we should leave for the station at seven.",
    "Jars of jam are on the top shelf.",
    "Hey, Travis, is that your car outside?",
    "Harvest time is the busiest part of the year.",
    "Turn on the lights in the kitchen.",
    "My friend Jarrod lives in Paris.",
)
"""Everyday speech, some of it close to the wake word ("Travis", "jars", "Jarrod")."""


@dataclass(frozen=True, slots=True)
class Utterance:
    voice: str
    """``engine:voice@speed``."""
    text: str
    audio: Int16Array


def _piper(texts: list[str], models_dir: Path) -> list[Int16Array]:
    settings = engine_settings("tts", {"provider": "piper"})
    tts = registry.factory("tts", "piper")(settings, ModelStore(models_dir, show_progress=False))

    async def speak(text: str) -> Int16Array:
        chunks = [chunk async for chunk in tts.synthesize(text)]
        return resample(np.concatenate(chunks), tts.sample_rate_hz, RATE_HZ)

    async def all_of_them() -> list[Int16Array]:
        return [await speak(text) for text in texts]

    return asyncio.run(all_of_them())


def spoken(texts: tuple[str, ...], models_dir: Path) -> list[Utterance]:
    """Every text in every voice (flite, espeak-ng at three speeds, Piper)."""
    out = []
    for engine, voice, speed in FLITE + ESPEAK:
        for text in texts:
            audio = synthesized(text, engine, voice, speed_wpm=speed or 175)
            out.append(Utterance(f"{engine}:{voice}@{speed or '-'}", text, audio))
    for text, audio in zip(texts, _piper(list(texts), models_dir), strict=True):
        out.append(Utterance("piper:en_US-joe-medium", text, audio))
    return out


def synthesized_word(voice: str = "rms") -> Int16Array:
    """ "Hey Jarvis." by flite's ``voice``."""
    return synthesized("Hey Jarvis.", "flite", voice)


def librivox() -> list[Int16Array]:
    return [read_wav(clip.path)[0] for clip in librivox_clips()]


def librivox_texts() -> tuple[str, ...]:
    return tuple(clip.transcript.lower() for clip in librivox_clips())


def noise(kind: str, seconds: float, rng: np.random.Generator, dbfs: float = -20.0) -> Int16Array:
    """``pink`` (a fan, a room) or ``music`` (chords changing every half second, with a beat),
    at ``dbfs`` RMS."""
    n = int(seconds * RATE_HZ)
    if kind == "pink":
        spectrum = np.fft.rfft(rng.normal(size=n))
        spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
        signal = np.fft.irfft(spectrum, n)
    elif kind == "music":
        t = np.arange(n) / RATE_HZ
        signal = np.zeros(n)
        step = RATE_HZ // 2
        for start in range(0, n, step):
            root = 110 * 2 ** (rng.integers(0, 12) / 12)
            part = slice(start, start + step)
            for ratio in (1, 1.26, 1.5, 2):  # a major chord and its octave
                signal[part] += np.sin(2 * np.pi * root * ratio * t[part])
        signal *= 0.6 + 0.4 * (np.sin(2 * np.pi * 2 * t) > 0)  # a beat at 2 Hz
    else:
        raise ValueError(kind)
    return level(signal, dbfs)


def level(signal: np.ndarray, dbfs: float) -> Int16Array:
    rms = float(np.sqrt(np.mean(np.square(signal, dtype=np.float64)))) or 1.0
    scaled = signal / rms * 32768 * 10 ** (dbfs / 20)
    out: Int16Array = np.clip(scaled, -32768, 32767).astype(np.int16)
    return out


def mix(speech: Int16Array, gain_db: float, background: Int16Array | None) -> Int16Array:
    """``speech`` at ``gain_db`` (0 dB: as synthesized, about -20 dBFS: near the microphone;
    -20 dB: a few metres away) over ``background``, one second of it before and after."""
    pad = np.zeros(RATE_HZ, np.float64)
    voice = np.concatenate([pad, speech.astype(np.float64) * 10 ** (gain_db / 20), pad])
    if background is not None:
        voice += np.resize(background, len(voice)).astype(np.float64)
    mixed: Int16Array = np.clip(voice, -32768, 32767).astype(np.int16)
    return mixed


def endless_talk(
    sources: list[Int16Array], rng: np.random.Generator, gap_s: tuple[float, float] = (0.2, 2.0)
) -> Iterator[Int16Array]:
    """Speech without the wake word for as long as it is read: the sources in random order and
    gain (-20..0 dB), pauses between, over pink noise or music a third of the time each."""
    for index in itertools.count():
        speech = sources[int(rng.integers(len(sources)))]
        gain = float(rng.uniform(-20, 0))
        pause = np.zeros(int(rng.uniform(*gap_s) * RATE_HZ), np.int16)
        piece = np.concatenate([speech, pause]).astype(np.float64) * 10 ** (gain / 20)
        kind = index % 3
        if kind:
            bed = noise("pink" if kind == 1 else "music", len(piece) / RATE_HZ + 1, rng)
            gain = 10 ** (float(rng.uniform(-12, -3)) / 20)
            piece += np.resize(bed, len(piece)).astype(np.float64) * gain
        yield np.clip(piece, -32768, 32767).astype(np.int16)


def trim(audio: Int16Array, threshold: int = 300) -> Int16Array:
    """Without the trailing (near-)silence: where the speech ends."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    return audio[: loud[-1] + 1] if len(loud) else audio
