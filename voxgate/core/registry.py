"""Providers by name. Imports are lazy so a heavy engine is only loaded when it is configured."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from voxgate.core.errors import ConfigError

# capability -> provider name -> "module:factory". A factory takes (settings section, ModelStore).
_PROVIDERS: dict[str, dict[str, str]] = {
    "vad": {
        "silero": "voxgate.providers.silero_vad:create",
        "standin": "voxgate.providers.standin:create_vad",
    },
    "stt": {
        "faster-whisper": "voxgate.providers.faster_whisper_stt:create",
        "openai": "voxgate.providers.openai_stt:create",
        "deepgram": "voxgate.providers.deepgram_stt:create",
        "cloudflare": "voxgate.providers.cloudflare_stt:create",
        "standin": "voxgate.providers.standin:create_stt",
    },
    "llm": {
        "llamacpp": "voxgate.providers.llamacpp_llm:create",
        "openai": "voxgate.providers.openai_llm:create",
        "standin": "voxgate.providers.standin:create_llm",
    },
    "tts": {
        "piper": "voxgate.providers.piper_tts:create",
        "openai": "voxgate.providers.openai_tts:create",
        "deepgram": "voxgate.providers.deepgram_tts:create",
        "elevenlabs": "voxgate.providers.elevenlabs_tts:create",
        "cloudflare": "voxgate.providers.cloudflare_tts:create",
        "standin": "voxgate.providers.standin:create_tts",
    },
    # Speech-to-speech: a factory takes (settings, turn settings, character, **session options)
    # and returns a whole session (voxgate.pipeline.voice_session.VoiceSession).
    "s2s": {
        "openai-realtime": "voxgate.providers.openai_realtime_session:create",
    },
}


def provider_names(capability: str) -> list[str]:
    return sorted(_PROVIDERS.get(capability, {}))


def register(capability: str, name: str, target: str) -> None:
    """Add a provider (``target`` is ``"package.module:factory"``)."""
    _PROVIDERS.setdefault(capability, {})[name] = target


def factory(capability: str, name: str) -> Callable[..., Any]:
    try:
        target = _PROVIDERS[capability][name]
    except KeyError:
        known = ", ".join(provider_names(capability)) or "none"
        raise ConfigError(f"unknown {capability} provider {name!r} (known: {known})") from None
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    created: Callable[..., Any] = getattr(module, attr)
    return created
