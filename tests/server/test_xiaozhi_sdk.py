"""The third-party xiaozhi device client ``xiaozhi-sdk`` (0.5.1, PyPI) against voxgate: OTA,
hello, MCP initialize, a spoken turn in auto mode, the reply decoded. It runs in a venv of its own
(.make/xiaozhi-sdk, built by ``make test``); the test skips only when that venv is absent and
VOXGATE_REQUIRE_XIAOZHI_SDK is unset."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fakes import Fakes, FakeSTT, FakeTTS, bounded, tone
from tests.server.test_xiaozhi_session import xiaozhi_server
from voxgate.cli import SAMPLE_QUESTION
from voxgate.core.audio import int16_to_float, read_wav, resample
from voxgate.core.config import Settings
from voxgate.evaluation import character_error_rate, normalize_words
from voxgate.pipeline import Engines

ROOT = Path(__file__).resolve().parents[2]
SDK_PYTHON = ROOT / ".make" / "xiaozhi-sdk" / "bin" / "python"
SCRIPT = Path(__file__).with_name("xiaozhi_sdk_turn.py")
SDK_MAC = "AA:BB:CC:DD:EE:50"


def _require_sdk() -> None:
    if SDK_PYTHON.exists():
        return
    if os.environ.get("VOXGATE_REQUIRE_XIAOZHI_SDK"):
        pytest.fail(f"VOXGATE_REQUIRE_XIAOZHI_SDK is set but {SDK_PYTHON} is missing (make test)")
    pytest.skip(f"xiaozhi-sdk's venv is absent ({SDK_PYTHON}); `make test` builds it")


async def sdk_turn(
    address: str, question: np.ndarray, out: Path
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Runs one turn through xiaozhi-sdk; the messages it passed on and the reply it decoded."""
    raw = out.with_name("question.raw")
    raw.write_bytes(question.astype("<i2").tobytes())
    process = await asyncio.create_subprocess_exec(
        str(SDK_PYTHON),
        str(SCRIPT),
        f"http://{address}/xiaozhi/ota/",
        SDK_MAC,
        str(raw),
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": ""},
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode(errors="replace")[-3000:]
    messages = json.loads(out.with_suffix(".json").read_text())
    audio = np.frombuffer(out.with_suffix(".raw").read_bytes(), dtype="<i2")
    return messages, audio


@bounded(120)
async def test_xiaozhi_sdk_completes_a_turn(tmp_path: Path) -> None:
    _require_sdk()
    fakes = Fakes(stt=FakeSTT(["hello from the sdk"]), tts=FakeTTS(ms_per_word=150))
    async with xiaozhi_server(tmp_path, fakes, register=(SDK_MAC,)) as rig:
        messages, audio = await sdk_turn(rig.address, tone(900), tmp_path / "turn")
    kinds = [(m.get("type"), m.get("state")) for m in messages]
    assert kinds[:5] == [
        ("stt", None),
        ("tts", "start"),
        ("llm", None),
        ("tts", "sentence_start"),
        ("tts", "stop"),
    ]
    assert next(m for m in messages if m.get("type") == "stt")["text"] == "hello from the sdk"
    # The fake reply ("Okay.": 150 ms, three 60 ms packets), decoded by the sdk at 16 kHz.
    assert len(audio) >= 0.15 * 16_000


@pytest.mark.models
@bounded(300)
async def test_xiaozhi_sdk_gets_a_spoken_answer_from_the_real_models(
    tmp_path: Path, real_engines: Engines, real_settings: Settings
) -> None:
    _require_sdk()
    samples, rate = read_wav(SAMPLE_QUESTION)
    question = resample(samples, rate, 16_000)
    async with xiaozhi_server(
        tmp_path, engines=real_engines, register=(SDK_MAC,), base=real_settings, close_engines=False
    ) as rig:
        messages, audio = await sdk_turn(rig.address, question, tmp_path / "turn")
    heard = [m["text"] for m in messages if m.get("type") == "stt"]
    assert heard and {"capital", "france"} <= set(normalize_words(heard[0])), heard
    sentences = [
        m["text"] for m in messages if m.get("type") == "tts" and m.get("state") == "sentence_start"
    ]
    reply_text = " ".join(sentences)
    assert reply_text.strip() and len(audio) > 16_000 * 0.5
    silence = np.zeros(8_000, dtype=np.int16)
    back = await real_engines.stt.transcribe(
        int16_to_float(np.concatenate([silence, audio, silence]))
    )
    assert character_error_rate(reply_text, back) <= 0.3, (reply_text, back)
