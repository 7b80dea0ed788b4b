"""One spoken turn through the third-party ``xiaozhi-sdk`` client (PyPI, 0.5.1), run by
test_xiaozhi_sdk.py in the sdk's own venv (``make`` builds it in .make/xiaozhi-sdk): it imports
nothing of voxgate's.

Usage: python xiaozhi_sdk_turn.py OTA_URL MAC QUESTION.raw OUT_PREFIX
QUESTION.raw is 16 kHz mono PCM16; writes OUT_PREFIX.json (the messages the sdk passed on) and
OUT_PREFIX.raw (the reply it decoded, PCM16 at 16 kHz).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from xiaozhi_sdk import XiaoZhiWebsocket

FRAME = 960  # 60 ms at 16 kHz


async def main(ota_url: str, mac: str, pcm: np.ndarray) -> tuple[list[dict[str, Any]], bytes]:
    messages: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def on_message(message: dict[str, Any]) -> None:
        messages.append(message)
        if message.get("type") == "tts" and message.get("state") == "stop":
            done.set()

    client = XiaoZhiWebsocket(on_message, ota_url=ota_url, audio_sample_rate=16_000)
    client.mode = "auto"
    if not await client.init_connection(mac):
        raise SystemExit("init_connection failed")
    pcm = np.concatenate([np.zeros(FRAME * 5, np.int16), pcm, np.zeros(FRAME * 25, np.int16)])
    pcm = np.pad(pcm, (0, -len(pcm) % FRAME))
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index in range(len(pcm) // FRAME):
        await asyncio.sleep(max(0.0, start + index * 0.06 - loop.time()))
        await client.send_audio(pcm[index * FRAME : (index + 1) * FRAME].tobytes())
    await asyncio.wait_for(done.wait(), 180)
    await asyncio.sleep(0.5)
    frames = list(client.output_audio_queue)
    audio = np.concatenate(frames).astype("<i2") if frames else np.zeros(0, "<i2")
    await client.close()
    return messages, audio.tobytes()


if __name__ == "__main__":
    question = np.frombuffer(Path(sys.argv[3]).read_bytes(), dtype="<i2")
    messages, reply = asyncio.run(main(sys.argv[1], sys.argv[2], question))
    out = Path(sys.argv[4])
    out.with_suffix(".raw").write_bytes(reply)
    out.with_suffix(".json").write_text(json.dumps(messages, ensure_ascii=False))
