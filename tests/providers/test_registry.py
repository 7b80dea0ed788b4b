"""Providers are found by name, lazily; an unknown name is a clear configuration error."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voxgate.core import registry
from voxgate.core.config import Settings
from voxgate.core.errors import ConfigError
from voxgate.pipeline import TurnSession, load_engines
from voxgate.pipeline.drive import spoken_turn


def test_unknown_provider_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown stt provider 'nope' \(known: .*faster-whisper"):
        registry.factory("stt", "nope")


class _NoModels:
    def resolve(self, name_or_path: str) -> object:
        raise AssertionError("stand-in engines need no model")


async def test_the_stand_in_engines_answer_a_spoken_turn_without_any_model() -> None:
    settings = Settings.model_validate(
        {capability: {"provider": "standin"} for capability in ("vad", "stt", "llm", "tts")}
    )
    engines = load_engines(settings, _NoModels())  # type: ignore[arg-type]
    session = TurnSession(engines, settings.turn, settings.character, output_rate_hz=16_000)
    tone = (np.sin(np.arange(16_000) / 16_000 * 2 * np.pi * 300) * 8000).astype(np.int16)
    result = await asyncio.wait_for(spoken_turn(session, tone, 16_000, realtime=False), 10)
    await session.close()
    await engines.aclose()
    assert result.transcript == "hello there"
    assert result.reply_text == "Hello to you too."
    assert len(result.pcm) == 16_000 * 4 * 200 // 1000


async def test_a_dead_cloud_llm_falls_back_to_the_next_engine_in_the_chain() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    settings = Settings.model_validate(
        {
            **{cap: {"provider": "standin"} for cap in ("vad", "stt", "tts")},
            "llm": {
                "provider": "openai",
                "base_url": f"http://127.0.0.1:{dead_port}/v1",
                "model": "gpt-x",
                "retry": {"attempts": 2, "base_backoff_s": 0.01},
                "fallbacks": [{"provider": "standin"}],
            },
        }
    )
    engines = load_engines(settings, _NoModels())  # type: ignore[arg-type]
    session = TurnSession(engines, settings.turn, settings.character, output_rate_hz=16_000)
    tone = (np.sin(np.arange(16_000) / 16_000 * 2 * np.pi * 300) * 8000).astype(np.int16)
    result = await asyncio.wait_for(spoken_turn(session, tone, 16_000, realtime=False), 10)
    await session.close()
    await engines.aclose()
    assert result.reply_text == "Hello to you too."  # the stand-in LLM answered
    assert not result.errors


def test_retry_after_is_read_in_seconds() -> None:
    from voxgate.providers.http_api import retry_after_seconds

    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(" 0.5 ") == 0.5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert retry_after_seconds(None) is None
