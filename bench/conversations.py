"""The spoken side of the device benchmark: short conversations a person might have with a
voice toy or a kitchen speaker, each turn leaning on the ones before (history matters), spoken by
Debian's ``flite`` voices at bench time.

These voices are not the tests' tuning set (the LibriVox clips of pocketsphinx-testdata and
voxgate/samples/question.wav) and not voxgate's own TTS (Piper): CMU's ``slt`` (US English,
female), ``rms`` (US English, male) and ``awb`` (Scottish English, male), all clustergen voices
built into flite. Synthesised speech is cleaner than a microphone's; it is what can be rebuilt
byte for byte on any machine (``apt-get install flite``) without committing audio.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.voicing import end_of_voice
from voxgate.core.audio import read_wav, resample
from voxgate.core.capabilities import Int16Array

RATE_HZ = 16_000
SPEECH_SOURCE = "flite 2.x voices slt, rms, awb (Debian package flite), synthesised at bench time"


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    voice: str
    turns: tuple[str, ...]


SCRIPTS: tuple[Script, ...] = (
    Script(
        "whales",
        "slt",
        (
            "Hi there! What is the biggest animal in the world?",
            "Wow. How much does it weigh?",
            "What does it eat?",
            "Where does it live?",
            "Is it a fish?",
            "What was the animal we were talking about?",
        ),
    ),
    Script(
        "cake",
        "rms",
        (
            "I want to bake a cake for my mom's birthday.",
            "What do I need to buy for it?",
            "How long does it stay in the oven?",
            "Should I put strawberries on top?",
            "What could I write on it?",
            "Thanks. Who was the cake for again?",
        ),
    ),
    Script(
        "moon",
        "awb",
        (
            "How far away is the moon?",
            "How long would it take to fly there?",
            "Has anybody walked on it?",
            "What did they bring back?",
            "Why does it look different every night?",
            "Tell me one more fun fact about it.",
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Utterance:
    """One turn's audio, 16 kHz PCM16 mono, and where its voice ends (found from the clip)."""

    text: str
    samples: Int16Array
    end_sample: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / RATE_HZ

    @property
    def end_s(self) -> float:
        return self.end_sample / RATE_HZ


def flite_path() -> str:
    path = shutil.which("flite")
    if path is None:
        raise RuntimeError("the device benchmark speaks with flite: apt-get install flite")
    return path


def speak(text: str, voice: str, workdir: Path) -> Utterance:
    """``text`` spoken by flite's ``voice``, at 16 kHz."""
    workdir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(f"{voice}\n{text}".encode()).hexdigest()[:12]
    path = workdir / f"{voice}-{digest}.wav"
    subprocess.run(
        [flite_path(), "-voice", voice, "-t", text, "-o", str(path)],
        check=True,
        capture_output=True,
    )
    samples, rate = read_wav(path)
    samples = np.asarray(resample(samples, rate, RATE_HZ), dtype=np.int16)
    end = end_of_voice(samples, RATE_HZ)
    if end is None:
        raise RuntimeError(f"flite produced no audible speech for {text!r}")
    return Utterance(text, samples, end)


def build(script: Script, workdir: Path, turns: int | None = None) -> list[Utterance]:
    """The audio of ``script``'s first ``turns`` turns (all of them by default)."""
    texts = script.turns if turns is None else script.turns[:turns]
    return [speak(text, script.voice, workdir) for text in texts]
