"""The database: an async SQLAlchemy engine on SQLite (the embedded default) or PostgreSQL, and
its migrations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from voxgate.core.errors import ConfigError
from voxgate.store.errors import StoreInvalid, translated

logger = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x766F78676174
"""The PostgreSQL advisory lock every process takes to migrate ("voxgat"): replicas starting
together on an empty database migrate one after the other; the later ones find it done."""


def database_url(url: str | None, data_dir: Path) -> str:
    """The configured URL, or the embedded default: ``voxgate.db`` in the data directory.

    Plain ``postgresql://`` and ``sqlite://`` URLs get their async drivers (asyncpg, aiosqlite)."""
    if url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{data_dir / 'voxgate.db'}"
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"not a database URL: {url!r} ({exc})") from None
    drivers = {"postgresql": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}
    if parsed.drivername in drivers:
        parsed = parsed.set(drivername=drivers[parsed.drivername])
    elif parsed.drivername not in drivers.values():
        raise ConfigError(
            f"unsupported database {parsed.drivername!r}: use postgresql://... or sqlite:///..."
        )
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer. NORMAL: a commit survives a crash of the process
    # (kill -9); only a power cut may lose the last commits.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def keep_private(url: str) -> None:
    """An SQLite file (and its WAL and shared-memory files, which SQLite creates with the
    database's own mode) readable by its owner only, like the secret files: it holds
    conversations and token hashes."""
    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    database = Path(path)
    database.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for file in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        with contextlib.suppress(FileNotFoundError):
            if file.stat().st_mode & 0o077:
                logger.info("making %s readable by its owner only", file)
                file.chmod(0o600)


class Sessions:
    """``async with sessions() as session`` (reads) or ``sessions.begin()`` (a transaction that
    commits on exit), with every database failure inside raised as a store error
    (:mod:`voxgate.store.errors`)."""

    def __init__(self, maker: async_sessionmaker[AsyncSession]) -> None:
        self._maker = maker

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[AsyncSession]:
        with translated():
            async with self._maker() as session:
                yield session

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        with translated():
            async with self._maker.begin() as session:
                yield session


class Database:
    """One engine per process; every store module works through :attr:`sessions`."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            keep_private(url)
        options: dict[str, Any] = {}
        if not self.is_sqlite:
            options = {
                "pool_size": pool_size,
                "max_overflow": max_overflow,
                "pool_pre_ping": True,
                # A silent host fails in seconds, not asyncpg's default minute.
                "connect_args": {"timeout": 5, "command_timeout": 30},
            }
        self.engine: AsyncEngine = create_async_engine(url, **options)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = Sessions(async_sessionmaker(self.engine, expire_on_commit=False))

    @property
    def sessions(self) -> Sessions:
        return self._sessions

    @sessions.setter
    def sessions(self, sessions: Sessions | async_sessionmaker[AsyncSession]) -> None:
        """Another session factory (tests point the store at a database that is away); a plain
        sessionmaker is wrapped, so its failures are store errors too."""
        self._sessions = sessions if isinstance(sessions, Sessions) else Sessions(sessions)

    @property
    def display_url(self) -> str:
        """The URL without its password, for logs and errors."""
        return make_url(self.url).render_as_string(hide_password=True)

    async def close(self) -> None:
        await self.engine.dispose()

    # -- migrations -------------------------------------------------------------------------

    async def upgrade(self, revision: str = "head") -> str | None:
        """Migrate up to ``revision``; at it already, nothing happens. Returns the revision found
        before (read under the migration lock: what this process migrated from)."""
        async with self.migration_lock():
            before = await self.revision()
            await self._migrate(lambda config: command.upgrade(config, revision))
        return before

    async def downgrade(self, revision: str) -> None:
        async with self.migration_lock():
            await self._migrate(lambda config: command.downgrade(config, revision))

    @contextlib.asynccontextmanager
    async def migration_lock(self) -> AsyncIterator[None]:
        """One process at a time inside (PostgreSQL: a session-level advisory lock, on a
        connection of its own, so the migration's transaction can be Alembic's; a process that
        dies inside loses its connection and with it the lock). SQLite: nothing to take; its own
        file lock orders the writes."""
        if self.is_sqlite:
            yield
            return
        with translated():
            async with self.engine.connect() as connection:
                await connection.execute(
                    text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
                await connection.commit()
                try:
                    yield
                finally:
                    await connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
                    await connection.commit()

    async def revision(self) -> str | None:
        """The schema's revision now (None: an empty database)."""

        def current(connection: Connection) -> str | None:
            return MigrationContext.configure(connection).get_current_revision()

        with translated():
            async with self.engine.connect() as connection:
                return await connection.run_sync(current)

    @staticmethod
    def head_revision() -> str | None:
        return ScriptDirectory.from_config(_alembic_config()).get_current_head()

    async def _migrate(self, run: Any) -> None:
        def migrate(connection: Connection) -> None:
            config = _alembic_config()
            config.attributes["connection"] = connection
            run(config)

        try:
            with translated():
                async with self.engine.begin() as connection:
                    await connection.run_sync(migrate)
        except CommandError as exc:  # a revision Alembic does not know, say
            raise StoreInvalid(str(exc)) from None


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


async def open_database(
    url: str,
    *,
    migrate: bool = True,
    timeout_s: float = 10.0,
    pool_size: int = 10,
    max_overflow: int = 10,
) -> Database:
    """Connect (and migrate to the newest schema); a clear error when the database is not there."""
    database = Database(url, pool_size=pool_size, max_overflow=max_overflow)
    try:
        async with asyncio.timeout(timeout_s):
            if migrate:
                before = await database.upgrade()
                if before != Database.head_revision():
                    logger.info("migrated the database from %s to the newest schema", before)
            elif await database.revision() != Database.head_revision():
                raise ConfigError(
                    f"the database at {database.display_url} is not at the newest schema: "
                    "run `voxgate db upgrade`"
                )
    except ConfigError:
        await database.close()
        raise
    except Exception as exc:  # whatever the driver raises: unreachable, refused, bad password
        await database.close()
        raise ConfigError(f"cannot open the database at {database.display_url}: {exc}") from exc
    return database
