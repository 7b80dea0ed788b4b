"""The Wyoming providers against the reference servers Home Assistant installs: wyoming-faster-whisper
and wyoming-piper, each run from their own venv (``.make/wyoming-ref``, built by ``make
wyoming-ref``; ``make test`` builds it) on voxgate's embedded Whisper and Piper models.

Skipped only when that venv is absent and ``VOXGATE_REQUIRE_WYOMING_REF`` is unset."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from bench.harness import free_port
from voxgate.cli import SAMPLE_QUESTION
from voxgate.core.audio import int16_to_float, read_wav, resample
from voxgate.core.config import Settings
from voxgate.evaluation import character_error_rate, normalize_words
from voxgate.models import ModelStore
from voxgate.providers.wyoming_stt import WyomingSTT, WyomingSTTSettings
from voxgate.providers.wyoming_tts import WyomingTTS, WyomingTTSSettings

pytestmark = pytest.mark.models

VENV = Path(__file__).resolve().parents[2] / ".make" / "wyoming-ref"
PYTHON = VENV / "bin" / "python"


def _require_venv() -> None:
    if PYTHON.exists():
        return
    message = f"{VENV} is missing: run `make wyoming-ref`"
    if os.environ.get("VOXGATE_REQUIRE_WYOMING_REF"):
        pytest.fail(message)
    pytest.skip(message)


@asynccontextmanager
async def reference_server(module: str, *args: str) -> AsyncIterator[int]:
    """``python -m module --uri tcp://127.0.0.1:PORT args`` from the reference venv, until it
    listens; yields the port."""
    _require_venv()
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        str(PYTHON),
        "-m",
        module,
        "--uri",
        f"tcp://127.0.0.1:{port}",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(120):
            while True:
                if process.returncode is not None:
                    assert process.stderr is not None
                    raise AssertionError((await process.stderr.read()).decode(errors="replace"))
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.2)
                    continue
                writer.close()
                break
        yield port
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


def _models() -> ModelStore:
    return ModelStore(Settings().models_dir, show_progress=False)


async def test_wyoming_stt_provider_with_wyoming_faster_whisper(tmp_path: Path) -> None:
    model_dir = _models().resolve("whisper-tiny-en")
    async with reference_server(
        "wyoming_faster_whisper",
        "--model",
        str(model_dir),
        "--data-dir",
        str(tmp_path),
        "--local-files-only",
    ) as port:
        samples, rate = read_wav(SAMPLE_QUESTION)
        engine = WyomingSTT(WyomingSTTSettings(port=port, timeout_s=120))
        text = await engine.transcribe(int16_to_float(resample(samples, rate, 16_000)))
    assert {"capital", "france"} <= set(normalize_words(text)), text


async def test_wyoming_tts_provider_with_wyoming_piper(tmp_path: Path) -> None:
    voice = _models().resolve("en_US-joe-medium")
    text = "The capital of France is Paris."
    async with reference_server(
        "wyoming_piper", "--voice", "en_US-joe-medium", "--data-dir", str(voice.parent)
    ) as port:
        engine = WyomingTTS(WyomingTTSSettings(port=port, timeout_s=120, sample_rate_hz=22_050))
        audio = np.concatenate([chunk async for chunk in engine.synthesize(text)])
    seconds = len(audio) / 22_050
    assert 1.0 < seconds < 5.0, seconds
    assert float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) > 300
    # What the reference server said is the text: voxgate's own Whisper hears it back.
    from voxgate.providers.faster_whisper_stt import FasterWhisperSettings, create

    whisper = create(FasterWhisperSettings(), _models())
    heard = await whisper.transcribe(int16_to_float(resample(audio, 22_050, 16_000)))
    assert character_error_rate(text, heard) <= 0.25, heard
