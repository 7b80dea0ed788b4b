"""Shared fixtures. The real embedded models load once per test run (marker ``models``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.postgres_server import PostgresServer, PostgresServerError, fresh_database
from tests.redis_server import RedisServerError, throwaway_redis
from voxgate.core.config import Settings, load_settings
from voxgate.models import ModelStore
from voxgate.pipeline import Engines, load_engines
from voxgate.pipeline.engines import warm_up

# Property tests check what is generated, not how fast: on a busy 2-core machine (CI, other test
# runs) generation and examples can be slow, which must not fail the suite.
settings.register_profile("voxgate", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("voxgate")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/cluster/ starts three servers, HAProxy and Redis for minutes: only with
    ``VOXGATE_CLUSTER_TESTS=1`` (``make test-cluster``, which CI runs after ``make test``)."""
    if collection_path.name == "cluster" and collection_path.parent.name == "tests":
        return os.environ.get("VOXGATE_CLUSTER_TESTS") != "1"
    return None


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


# --- A real, throwaway PostgreSQL server (tests/postgres_server.py) ----------------------------

_POSTGRES_SKIPPED = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole run, started on first use. If it cannot start
    here the tests using it are skipped, loudly (see the terminal summary), unless
    ``VOXGATE_REQUIRE_POSTGRES=1`` (CI), when they fail."""
    server = PostgresServer()
    try:
        server.start()
    except PostgresServerError as exc:
        reason = f"PostgreSQL cannot start here: {exc}"
        if os.environ.get("VOXGATE_REQUIRE_POSTGRES") == "1":
            pytest.fail(
                f"{reason}\n(VOXGATE_REQUIRE_POSTGRES=1, so this fails instead of skipping)"
            )
        request.config.stash[_POSTGRES_SKIPPED] = reason
        pytest.skip(reason.splitlines()[0])
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL (``postgresql+asyncpg://``) of the session server's ``voxgate`` database."""
    return postgres_server.url()


@pytest.fixture
async def postgres_database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh, empty database for this test alone (dropped afterwards, even if connections are
    left open); yields its SQLAlchemy URL."""
    async with fresh_database(postgres_server) as url:
        yield url


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    reason = config.stash.get(_POSTGRES_SKIPPED, None)
    if reason is None:
        return
    terminalreporter.write_sep("=", "WARNING: PostgreSQL tests were SKIPPED", red=True, bold=True)
    for line in reason.splitlines():
        terminalreporter.write_line(line, yellow=True)
    terminalreporter.write_line(
        "Install Debian's postgresql (`make setup`); set VOXGATE_REQUIRE_POSTGRES=1 to fail instead.",
        yellow=True,
        bold=True,
    )


@pytest.fixture
def own_postgres(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, for tests that stop or pause it."""
    server = PostgresServer()
    try:
        server.start()
    except PostgresServerError as exc:  # pragma: no cover
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One throwaway Redis server for the whole run (tests/redis_server.py). Skipped if it cannot
    start here, unless ``VOXGATE_REQUIRE_REDIS=1`` (CI), when the tests fail."""
    try:
        with throwaway_redis() as url:
            yield url
    except RedisServerError as exc:
        if os.environ.get("VOXGATE_REQUIRE_REDIS") == "1":
            pytest.fail(f"{exc}\n(VOXGATE_REQUIRE_REDIS=1, so this fails instead of skipping)")
        pytest.skip(str(exc))
