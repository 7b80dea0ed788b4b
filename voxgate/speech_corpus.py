"""Real human speech for tests and benchmarks: Debian's ``pocketsphinx-testdata`` (LibriVox clips
with transcripts, BSD licence), installed by the project's set-up."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

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
