"""Real human speech for tests and benchmarks: Debian's ``pocketsphinx-testdata`` (LibriVox clips
with transcripts, BSD licence), installed by the project's set-up."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from voxgate.core.audio import read_wav, resample
from voxgate.core.capabilities import Int16Array

CORPUS_DIR = Path("/usr/share/pocketsphinx/test/data")
INSTALL_HINT = "apt-get install pocketsphinx-testdata"


@dataclass(frozen=True, slots=True)
class Clip:
    name: str
    path: Path
    transcript: str


def librivox_clips(root: Path = CORPUS_DIR) -> list[Clip]:
    """The LibriVox clips with their reference transcripts (empty if the package is missing)."""
    folder = root / "librivox"
    listing = folder / "transcription"
    if not listing.is_file():
        return []
    clips = []
    for line in listing.read_text().splitlines():
        match = re.fullmatch(r"<s>(.*)</s>\s*\((\S+)\)", line.strip())
        if match:
            text, name = match.group(1).strip(), match.group(2)
            path = folder / f"{name}.wav"
            if path.is_file():
                clips.append(Clip(name, path, text))
    return clips


SYNTH_HINT = "apt-get install flite espeak-ng"


def synthesized(text: str, engine: str, voice: str, *, speed_wpm: int = 175) -> Int16Array:
    """``text`` spoken by Debian's ``flite`` or ``espeak-ng`` in ``voice``, as 16 kHz mono PCM16
    (made on the spot: no audio is kept). ``speed_wpm``: espeak-ng only. FileNotFoundError when
    the synthesizer is not installed (:data:`SYNTH_HINT`)."""
    if shutil.which(engine) is None or engine not in {"flite", "espeak-ng"}:
        raise FileNotFoundError(f"{engine} is not available ({SYNTH_HINT})")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "speech.wav"
        if engine == "flite":
            command = ["flite", "-voice", voice, "-t", text, "-o", str(out)]
        else:
            command = ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-w", str(out), text]
        subprocess.run(command, check=True, capture_output=True)
        audio, rate = read_wav(out)
    return resample(audio, rate, 16_000)
