"""Settings per engine: what every engine shares, and the sections that pick one by ``provider``.

Each engine module (``voxgate/providers/*.py``) owns the settings class of its engine, with its own
defaults, and subclasses one of the capability classes here. A section (``[stt]``, one of
``stt.fallbacks``...) is a union discriminated on ``provider``: the registry names the class that
validates it, and only the configured engines' modules are imported. A key the chosen engine does
not have is an error that names the key and the engines that do have it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, SecretStr, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from voxgate.core import registry
from voxgate.core.errors import ConfigError

Capability = Literal["vad", "stt", "llm", "tts", "s2s", "wake"]

SECTION_NAMES: dict[str, str] = {"vad": "vad", "stt": "stt", "llm": "llm", "tts": "tts"}
SECTION_NAMES["s2s"] = "realtime"
SECTION_NAMES["wake"] = "wake_word"
"""The config section of each capability (speech to speech is ``[realtime]``, the wake-word
engine ``[wake_word]``)."""


class RetrySettings(BaseModel):
    attempts: int = Field(2, ge=1)
    """Tries in all, the first included; only errors the provider calls retryable are retried."""
    base_backoff_s: float = Field(0.2, ge=0)
    max_backoff_s: float = Field(2.0, ge=0)
    """A longer Retry-After gives up at once, so the next engine in the chain can answer."""


class BreakerSettings(BaseModel):
    failure_threshold: int = Field(3, ge=1)
    """Consecutive failures that open the circuit: the engine is then skipped at once..."""
    cooldown_s: float = Field(30.0, ge=0)
    """...for this long, after which one trial call may go through."""


class EngineSettings(BaseModel):
    """What every engine's settings have: the ``provider`` that names it. Keys it does not know
    are refused (they would otherwise do nothing, silently)."""

    model_config = ConfigDict(extra="forbid")

    provider: str


class ServiceSettings(EngineSettings):
    """An engine every session calls (STT, LLM, TTS): the shared wrappers around it limit how
    many calls run at once and handle its failures (voxgate/pipeline/engines.py)."""

    max_concurrent: int = Field(1, ge=1)
    """Calls running at once; more sessions queue in arrival order."""
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    timeout_s_first_byte: float | None = Field(None, gt=0)
    """Streams (LLM, TTS): give up if nothing comes within this long."""
    timeout_s_total: float | None = Field(None, gt=0)
    """Time spent waiting on the engine for one call, at most."""

    @property
    def priced_model(self) -> str:
        """The model the engine runs, as priced: ``[prices."provider/<this>"]``."""
        raise NotImplementedError

    @field_validator("fallbacks", check_fields=False)  # each capability types its own list
    @classmethod
    def _flat(cls, fallbacks: list[ServiceSettings]) -> list[ServiceSettings]:
        chained = (STTSettings, LLMSettings, TTSSettings)
        if any(isinstance(f, chained) and f.fallbacks for f in fallbacks):
            raise ValueError(
                "a fallback cannot have fallbacks of its own: list every engine, in order, in "
                "the section's own fallbacks"
            )
        return fallbacks


class VADSettings(EngineSettings):
    threshold: float = Field(0.5, gt=0, lt=1)
    """Speech probability above which a chunk counts as speech."""


class WakeWordSettings(EngineSettings):
    """The engine that listens for the wake word, for sessions in ``wake_word`` listening mode."""

    wake_word: str = "hey_jarvis"
    """The word a session listens for when neither it nor its character names one."""
    threshold: float | None = Field(None, gt=0, lt=1)
    """The averaged score at which the word counts as heard; None: each model's own cut-off,
    as its authors tuned it (lower: wakes more readily, and falsely more often)."""


class STTSettings(ServiceSettings):
    model: str
    fallbacks: list[STTSection] = Field(default_factory=list)
    """Engines tried in order when this one fails (each with its own settings)."""

    @property
    def priced_model(self) -> str:
        return self.model


class LLMSettings(ServiceSettings):
    model: str
    max_tokens: int = Field(150, ge=1)
    temperature: float = Field(0.7, ge=0)
    fallbacks: list[LLMSection] = Field(default_factory=list)
    """Engines tried in order when this one fails, e.g. a cloud LLM falling back to llamacpp."""

    @property
    def priced_model(self) -> str:
        return self.model


class TTSSettings(ServiceSettings):
    fallbacks: list[TTSSection] = Field(default_factory=list)
    """Engines tried in order when this one fails; their audio is resampled to this one's rate."""


class RealtimeSettings(EngineSettings):
    """A speech-to-speech engine, used instead of the VAD → STT → LLM → TTS cascade."""

    model: str
    """Names the engine in usage records and price keys (``"openai-realtime/gpt-realtime"``)."""


class HttpApiSettings(BaseModel):
    """The endpoint of a cloud engine (mixed into its settings class)."""

    base_url: str | None = None
    """The API's base URL (e.g. ``https://api.groq.com/openai/v1``)."""
    api_key: SecretStr | None = None
    """From the environment (``VOXGATE_STT__API_KEY``...), never the config file."""
    extra_headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(30.0, gt=0)
    """Connecting and each read, at most."""


# -- the sections: one engine's settings, chosen by provider ---------------------------------


def section_validator(capability: Capability) -> Callable[[Any], EngineSettings]:
    """Validates a section (a table, or settings given in code) as its provider's settings."""
    base = _BASES[capability]
    name = SECTION_NAMES[capability]

    def validate(value: Any) -> EngineSettings:
        if isinstance(value, EngineSettings):
            model = _model(capability, value.provider)
            if not isinstance(value, model):
                raise ValueError(
                    f"{type(value).__name__} is not the settings of the {value.provider!r} "
                    f"{name} engine ({model.__name__})"
                )
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"a {name} section must be a table of settings")
        data = dict(value)
        provider = data.get("provider", registry.DEFAULT_PROVIDERS.get(capability))
        if not isinstance(provider, str):
            raise _error(("provider",), f"choose a {name} provider: {_known(capability)}", data)
        model = _model(capability, provider)
        unknown = [key for key in data if key not in model.model_fields]
        if unknown:
            raise _not_settings(capability, provider, unknown, data)
        try:
            settings = model.model_validate(data)
        except ValidationError as exc:
            raise _explained(capability, provider, exc) from None
        assert isinstance(settings, base)
        return settings

    return validate


def _model(capability: Capability, provider: str) -> type[EngineSettings]:
    try:
        model = registry.settings_model(capability, provider)
    except ConfigError:  # an unknown name
        raise _error(
            ("provider",),
            f"unknown {SECTION_NAMES[capability]} provider {provider!r} "
            f"(known: {_known(capability)})",
            provider,
        ) from None
    assert issubclass(model, EngineSettings)
    return model


def _known(capability: Capability) -> str:
    return ", ".join(registry.provider_names(capability))


def _not_settings(
    capability: Capability, provider: str, keys: list[str], data: Mapping[str, Any]
) -> ValidationError:
    """What a key of another engine (or a typo) means, and what to do about it. The error's
    location names the key (``stt.compute_type``, ``stt.fallbacks.0.compute_type``)."""
    what = f"the {provider} {_title(capability)} engine"
    details: list[InitErrorDetails] = []
    for key in keys:
        owners = [
            other
            for other in registry.provider_names(capability)
            if other != provider and key in _model(capability, other).model_fields
        ]
        if owners:
            message = (
                f"not a setting of {what} (only of {' and '.join(owners)}): remove it, or set "
                f"provider = {' or '.join(repr(o) for o in owners)}"
            )
        else:
            fields = ", ".join(sorted(_model(capability, provider).model_fields))
            message = f"not a setting of {what}: remove it (its settings: {fields})"
        details.append(_detail("engine_setting", message, (key,), data[key]))
    return ValidationError.from_exception_data(f"{provider} settings", details)


def _explained(capability: Capability, provider: str, exc: ValidationError) -> ValidationError:
    """``exc`` with "Field required" saying whose setting it is: cloud engines have no default
    for the model they run or the server they talk to."""
    errors = exc.errors()
    if not any(error["type"] == "missing" for error in errors):
        return exc
    needed = f"the {provider} {_title(capability)} engine needs it (it has no default for it)"
    return ValidationError.from_exception_data(
        exc.title,
        [
            _detail(
                error["type"],
                needed if error["type"] == "missing" else error["msg"],
                error["loc"],
                error["input"],
            )
            for error in errors
        ],
    )


def _title(capability: Capability) -> str:
    return {"s2s": "speech-to-speech", "wake": "wake-word"}.get(capability, capability.upper())


def _detail(kind: str, message: str, loc: tuple[Any, ...], value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)


def _error(loc: tuple[str, ...], message: str, value: Any) -> ValidationError:
    detail = _detail("engine_provider", message, loc, value)
    return ValidationError.from_exception_data("engine settings", [detail])


_BASES: dict[str, type[EngineSettings]] = {
    "vad": VADSettings,
    "stt": STTSettings,
    "llm": LLMSettings,
    "tts": TTSSettings,
    "s2s": RealtimeSettings,
    "wake": WakeWordSettings,
}

VADSection = Annotated[VADSettings, PlainValidator(section_validator("vad"))]
STTSection = Annotated[STTSettings, PlainValidator(section_validator("stt"))]
LLMSection = Annotated[LLMSettings, PlainValidator(section_validator("llm"))]
TTSSection = Annotated[TTSSettings, PlainValidator(section_validator("tts"))]
RealtimeSection = Annotated[RealtimeSettings, PlainValidator(section_validator("s2s"))]
WakeWordSection = Annotated[WakeWordSettings, PlainValidator(section_validator("wake"))]

for _base in (STTSettings, LLMSettings, TTSSettings):
    _base.model_rebuild()


def engine_settings(capability: Capability, values: Mapping[str, Any] | None = None) -> Any:
    """The settings of the engine ``values["provider"]`` names (default: the capability's
    default engine), validated as a config section is."""
    return section_validator(capability)(dict(values or {}))
