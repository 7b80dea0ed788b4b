"""Shared fixtures. The real embedded models load once per test run (marker ``models``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from voxgate.core.config import Settings, load_settings
from voxgate.models import ModelStore
from voxgate.pipeline import Engines, load_engines
from voxgate.pipeline.engines import warm_up


@pytest.fixture(scope="session")
def real_settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def _loaded_engines(real_settings: Settings) -> Iterator[Engines]:
    engines = load_engines(real_settings, ModelStore(real_settings.models_dir, show_progress=False))
    yield engines
    engines.close()


@pytest.fixture(scope="session")
async def real_engines(_loaded_engines: Engines, real_settings: Settings) -> AsyncIterator[Engines]:
    await warm_up(_loaded_engines, real_settings.character.system_prompt)
    yield _loaded_engines
