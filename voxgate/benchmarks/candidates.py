"""Which engines ``voxgate bench providers`` compares, and how each one is loaded on its own.

By default the candidates of a capability are its configured engine and its ``fallbacks``: a
config that names alternatives for failover already names what is worth comparing. An engines
file (``--engines FILE.toml``) lists them instead, one ``[[stt]]``, ``[[llm]]`` or ``[[tts]]``
table per engine, each a full settings section validated like the config's::

    [[stt]]
    provider = "faster-whisper"
    model = "whisper-base"

    [[stt]]                       # an engine without its key is listed as skipped
    provider = "openai"
    base_url = "https://api.groq.com/openai/v1"
    model = "whisper-large-v3-turbo"
    api_key = "gsk_..."           # a key here: keep the file private

    [[tts]]
    provider = "piper"

    [judge]                       # the STT that scores TTS intelligibility (this is the default)
    provider = "faster-whisper"
    model = "whisper-tiny-en"

Prices come from the config's ``[prices."provider/model"]`` table, as for the turn engine.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voxgate.core import registry
from voxgate.core.capabilities import ModelResolver
from voxgate.core.config import Settings, describe_errors
from voxgate.core.engine_settings import (
    LLMSection,
    LLMSettings,
    STTSection,
    STTSettings,
    TTSSection,
    TTSSettings,
    engine_settings,
)
from voxgate.core.errors import ConfigError

Capability = Literal["stt", "llm", "tts"]
Section = STTSettings | LLMSettings | TTSSettings


class EnginesFile(BaseModel):
    """The ``--engines`` file. A capability it lists replaces the config's candidates for it."""

    model_config = ConfigDict(extra="forbid")

    stt: list[STTSection] = Field(default_factory=list)
    llm: list[LLMSection] = Field(default_factory=list)
    tts: list[TTSSection] = Field(default_factory=list)
    judge: STTSection | None = None
    """The STT that listens to each TTS engine's audio; default: the local faster-whisper."""


@dataclass(frozen=True, slots=True)
class Candidates:
    stt: list[STTSettings]
    llm: list[LLMSettings]
    tts: list[TTSSettings]
    judge: STTSettings | None
    """Scores TTS intelligibility (its WER on the synthesised audio); None: not scored."""

    def by_capability(self) -> list[tuple[Capability, list[Any]]]:
        return [("stt", self.stt), ("llm", self.llm), ("tts", self.tts)]


# Instant engines for a quick dry run and the tests; their model names say what they are.
STANDIN_STT: STTSettings = engine_settings("stt", {"provider": "standin", "model": "fixed-text"})
STANDIN_LLM: LLMSettings = engine_settings("llm", {"provider": "standin", "model": "fixed-reply"})
STANDIN_TTS: TTSSettings = engine_settings("tts", {"provider": "standin", "voice": "tone"})


def _alone(section: Any) -> Any:
    # A candidate is measured on its own: its fallbacks would hide its failures.
    return section.model_copy(update={"fallbacks": []})


def from_settings(settings: Settings) -> Candidates:
    """Each capability's configured engine, then its fallbacks; the judge is the default local STT."""
    return Candidates(
        stt=[_alone(s) for s in (settings.stt, *settings.stt.fallbacks)],
        llm=[_alone(s) for s in (settings.llm, *settings.llm.fallbacks)],
        tts=[_alone(s) for s in (settings.tts, *settings.tts.fallbacks)],
        judge=engine_settings("stt"),
    )


def read_engines_file(path: Path, base: Candidates) -> Candidates:
    """``base`` with the capabilities ``path`` lists replaced by its entries."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"engines file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"engines file {path}: {exc}") from exc
    try:
        listed = EnginesFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"engines file {path}: {describe_errors(exc)}") from None
    return Candidates(
        stt=[_alone(s) for s in listed.stt] or base.stt,
        llm=[_alone(s) for s in listed.llm] or base.llm,
        tts=[_alone(s) for s in listed.tts] or base.tts,
        judge=listed.judge or base.judge,
    )


def with_standin(candidates: Candidates) -> Candidates:
    return replace(
        candidates,
        stt=[*candidates.stt, STANDIN_STT],
        llm=[*candidates.llm, STANDIN_LLM],
        tts=[*candidates.tts, STANDIN_TTS],
    )


def price_key(capability: Capability, section: Section) -> str:
    """``provider/model`` as in the price table: the model the engine runs (for Piper, its
    voice), as the turn engine prices it (voxgate/pipeline/engines.py)."""
    return f"{section.provider}/{section.priced_model}"


def labels(capability: Capability, sections: list[Any]) -> list[str]:
    """One unique name per candidate: its price key, numbered when the same one comes twice."""
    names: list[str] = []
    for section in sections:
        name = price_key(capability, section)
        count = sum(1 for n in names if n == name or n.startswith(f"{name} #"))
        names.append(f"{name} #{count + 1}" if count else name)
    return names


def load(capability: Capability, section: Section, models: ModelResolver) -> Any:
    """The bare engine (no retries, no fallback): a failure is the engine's, reported as such.
    Raises what the provider raises: ConfigError for a missing key, ModelError, ImportError."""
    create = registry.factory(capability, section.provider)
    return create(section, models)
