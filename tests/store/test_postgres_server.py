"""The throwaway PostgreSQL server (tests/postgres_server.py) and its fixtures (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.postgres_server import (
    BINDIR_ENV,
    DEBIAN_ROOT,
    PostgresServer,
    PostgresServerError,
    find_bindir,
    fresh_database,
    throwaway_postgres,
)

REPO = Path(__file__).resolve().parents[2]


async def _scalar(url: str, sql: str) -> object:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text(sql))).scalar_one()
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
            return set(names)
    finally:
        await engine.dispose()


async def test_session_server_is_real_postgres_with_voxgate_database(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
    assert postgres_url.endswith("/voxgate")
    assert await _scalar(postgres_url, "SELECT 1") == 1
    assert await _scalar(postgres_url, "SELECT current_database()") == "voxgate"
    version = await _scalar(postgres_url, "SELECT version()")
    assert isinstance(version, str) and version.startswith("PostgreSQL ")
    for setting in ("fsync", "full_page_writes", "synchronous_commit"):
        assert await _scalar(postgres_url, f"SHOW {setting}") == "off", setting
    assert await _scalar(postgres_url, "SHOW listen_addresses") == "127.0.0.1"


async def test_create_insert_and_read_back(postgres_database_url: str) -> None:
    metadata = sa.MetaData()
    notes = sa.Table(
        "notes",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
    )
    engine = create_async_engine(postgres_database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(
                notes.insert(),
                [{"text": "hello", "meta": {"n": 1}}, {"text": "wörld", "meta": {"n": 2}}],
            )
        # A separate connection (and transaction) sees the committed rows.
        async with engine.connect() as conn:
            rows = (
                await conn.execute(sa.select(notes.c.text, notes.c.meta).order_by(notes.c.id))
            ).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in rows] == [("hello", {"n": 1}), ("wörld", {"n": 2})]


async def test_per_test_database_is_fresh_and_empty(postgres_database_url: str) -> None:
    name = await _scalar(postgres_database_url, "SELECT current_database()")
    assert isinstance(name, str) and name.startswith("test_")
    assert await _tables(postgres_database_url) == set()


@pytest.mark.parametrize("run", [1, 2])
async def test_per_test_databases_are_isolated_across_tests(
    postgres_database_url: str, run: int
) -> None:
    """Each run creates the same table: the second would fail if it saw the first's database."""
    engine = create_async_engine(postgres_database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE marker (run int NOT NULL)"))
            await conn.execute(sa.text("INSERT INTO marker VALUES (:run)"), {"run": run})
        async with engine.connect() as conn:
            runs = (await conn.execute(sa.text("SELECT run FROM marker"))).scalars().all()
    finally:
        await engine.dispose()
    assert runs == [run]


async def test_two_per_test_databases_are_isolated_and_dropped_after(
    postgres_server: PostgresServer, postgres_database_url: str
) -> None:
    async with fresh_database(postgres_server) as other_url:
        assert other_url != postgres_database_url
        engine = create_async_engine(postgres_database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text("CREATE TABLE only_here (x int)"))
                await conn.execute(sa.text("INSERT INTO only_here VALUES (1)"))
        finally:
            await engine.dispose()
        assert await _tables(postgres_database_url) == {"only_here"}
        assert await _tables(other_url) == set()
        # A connection left open does not keep the database from being dropped.
        lingering = await asyncpg.connect(other_url.replace("+asyncpg", ""))
    try:
        with pytest.raises(sa.exc.DBAPIError, match="does not exist"):
            await _scalar(other_url, "SELECT 1")
    finally:
        await lingering.close()
    assert await _tables(postgres_database_url) == {"only_here"}


async def test_stopped_server_refuses_connections() -> None:
    with throwaway_postgres() as url:
        assert await _scalar(url, "SELECT 1") == 1
    with pytest.raises(OSError):
        await _scalar(url, "SELECT 1")


async def test_killed_server_refuses_connections() -> None:
    server = PostgresServer().start()
    try:
        root = server.root
        assert root is not None and root.is_dir()
        assert await _scalar(server.url(), "SELECT 1") == 1
        server.kill()
        with pytest.raises(OSError):
            await _scalar(server.url(), "SELECT 1")
    finally:
        server.stop()
    assert root is not None and not root.exists()
    server.stop()  # idempotent


def test_missing_programs_are_named(tmp_path: Path) -> None:
    with pytest.raises(PostgresServerError, match="initdb"):
        PostgresServer(bindir=tmp_path).start()


def test_missing_installation_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("tests.postgres_server.DEBIAN_ROOT", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(BINDIR_ENV, raising=False)
    with pytest.raises(PostgresServerError, match=r"not found.*postgresql"):
        find_bindir()


def test_prefers_debians_highest_version() -> None:
    if not any(DEBIAN_ROOT.glob("*/bin/initdb")):
        pytest.skip(f"no Debian PostgreSQL under {DEBIAN_ROOT}")
    newest = max(
        (p.parent for p in DEBIAN_ROOT.glob("*/bin/initdb")),
        key=lambda b: tuple(int(x) for x in b.parent.name.split(".") if x.isdigit()),
    )
    assert find_bindir() == newest


# --- the fixture's behaviour when PostgreSQL cannot start: skip loudly, or fail in CI -----------


def _run_pytest(test: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "VOXGATE_REQUIRE_POSTGRES"}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"{__file__}::{test}"],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_unavailable_postgres_skips_loudly(tmp_path: Path) -> None:
    result = _run_pytest(
        "test_session_server_is_real_postgres_with_voxgate_database", **{BINDIR_ENV: str(tmp_path)}
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 skipped" in output, output
    assert "WARNING: PostgreSQL tests were SKIPPED" in output, output
    assert "initdb" in output, output


def test_unavailable_postgres_fails_when_required(tmp_path: Path) -> None:
    result = _run_pytest(
        "test_session_server_is_real_postgres_with_voxgate_database",
        **{BINDIR_ENV: str(tmp_path), "VOXGATE_REQUIRE_POSTGRES": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "1 error" in output, output
    assert "VOXGATE_REQUIRE_POSTGRES=1" in output, output
    assert "SKIPPED" not in output, output
    assert " skipped" not in output.splitlines()[-1], output
