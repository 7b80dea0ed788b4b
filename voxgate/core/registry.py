"""Engines by name: a provider's settings class and its factory, imported lazily so only the
configured engines' modules are loaded.

Adding an engine is one module in ``voxgate/providers/`` (its settings class, subclassing one of
``voxgate/core/engine_settings.py``, and a ``create(settings, models)`` factory) and one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voxgate.core.errors import ConfigError

if TYPE_CHECKING:
    from voxgate.core.engine_settings import EngineSettings


@dataclass(frozen=True, slots=True)
class Engine:
    """Where an engine's settings class and factory are, each as ``"package.module:name"``."""

    settings: str
    factory: str


def _p(module: str, settings: str, factory: str = "create") -> Engine:
    """An engine whose module in ``voxgate/providers/`` holds both."""
    return Engine(f"voxgate.providers.{module}:{settings}", f"voxgate.providers.{module}:{factory}")


# capability -> provider name -> engine. A factory takes (its settings, ModelStore).
_ENGINES: dict[str, dict[str, Engine]] = {
    "vad": {
        "silero": _p("silero_vad", "SileroVADSettings"),
        "standin": _p("standin", "StandinVADSettings", "create_vad"),
    },
    # End of turn (voxgate.core.capabilities.EndOfTurnModel): no section of its own, the factory
    # takes [turn]'s settings, which name the model.
    "turn": {
        "smart-turn": Engine(
            "voxgate.core.config:TurnSettings", "voxgate.providers.smart_turn:create"
        ),
    },
    "stt": {
        "faster-whisper": _p("faster_whisper_stt", "FasterWhisperSettings"),
        "openai": _p("openai_stt", "OpenAISTTSettings"),
        "deepgram": _p("deepgram_stt", "DeepgramSTTSettings"),
        "cloudflare": _p("cloudflare_stt", "CloudflareSTTSettings"),
        "wyoming": _p("wyoming_stt", "WyomingSTTSettings"),
        "standin": _p("standin", "StandinSTTSettings", "create_stt"),
    },
    "llm": {
        "llamacpp": _p("llamacpp_llm", "LlamaCppSettings"),
        "openai": _p("openai_llm", "OpenAILLMSettings"),
        "standin": _p("standin", "StandinLLMSettings", "create_llm"),
    },
    "tts": {
        "piper": _p("piper_tts", "PiperSettings"),
        "openai": _p("openai_tts", "OpenAITTSSettings"),
        "deepgram": _p("deepgram_tts", "DeepgramTTSSettings"),
        "elevenlabs": _p("elevenlabs_tts", "ElevenLabsSettings"),
        "cloudflare": _p("cloudflare_tts", "CloudflareTTSSettings"),
        "wyoming": _p("wyoming_tts", "WyomingTTSSettings"),
        "standin": _p("standin", "StandinTTSSettings", "create_tts"),
    },
    # The wake word ([wake_word]): voxgate.core.capabilities.WakeWord.
    "wake": {
        "micro": _p("micro_wakeword", "MicroWakeWordSettings"),
    },
    # Speech to speech ([realtime]): a factory takes (settings, turn settings, character,
    # **session options) and returns a whole session (voxgate.pipeline.voice_session).
    "s2s": {
        "openai-realtime": Engine(
            "voxgate.providers.openai_realtime:OpenAIRealtimeSettings",
            "voxgate.pipeline.realtime_session:create",
        ),
    },
}

DEFAULT_PROVIDERS: dict[str, str] = {
    "vad": "silero",
    "stt": "faster-whisper",
    "llm": "llamacpp",
    "tts": "piper",
    "s2s": "openai-realtime",
    "wake": "micro",
}
"""The embedded default of each capability: a section that names no provider gets it."""


def provider_names(capability: str) -> list[str]:
    return sorted(_ENGINES.get(capability, {}))


def _engine(capability: str, name: str) -> Engine:
    try:
        return _ENGINES[capability][name]
    except KeyError:
        known = ", ".join(provider_names(capability)) or "none"
        raise ConfigError(f"unknown {capability} provider {name!r} (known: {known})") from None


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def settings_model(capability: str, name: str) -> type[EngineSettings]:
    """The settings class of engine ``name``."""
    model: type[EngineSettings] = _load(_engine(capability, name).settings)
    return model


def factory(capability: str, name: str) -> Callable[..., Any]:
    created: Callable[..., Any] = _load(_engine(capability, name).factory)
    return created
