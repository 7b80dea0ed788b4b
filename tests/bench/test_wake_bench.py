"""One quick run of the wake-word benchmark's device part: the relay server in process, the word
heard at the device, then a short soak that must leave nothing in the database. Checks the
bench's bookkeeping, not its figures."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench import wake, wake_audio
from voxgate.speech_corpus import librivox_clips


def test_the_device_part_hears_the_word_and_the_soak_stores_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not librivox_clips():
        pytest.skip("apt-get install pocketsphinx-testdata")
    try:
        said = [wake_audio.trim(wake_audio.synthesized_word("rms"))]
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    models, data = tmp_path / "models", tmp_path / "data"
    asyncio.run(wake.relay("hey_jarvis", said, 2, 0.2, models, data))
    out = capsys.readouterr().out
    assert "(2 heard, 0 missed; 1 voices in turn)" in out, out
    assert "rows afterwards: {'conversations': 0, 'messages': 0, 'usage': 0, 'errors': 0}" in out
    assert "always-listening devices per core" in out
