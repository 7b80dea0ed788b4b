"""What voxgate keeps: users, devices, characters, conversations, usage (SQLAlchemy, async)."""

from __future__ import annotations

from dataclasses import dataclass

from voxgate.core.config import Settings
from voxgate.store.characters import Characters
from voxgate.store.conversations import Conversations
from voxgate.store.database import Database, database_url, open_database
from voxgate.store.devices import Devices
from voxgate.store.reports import Reports
from voxgate.store.users import Users
from voxgate.store.writer import TurnWriter


@dataclass
class Store:
    database: Database
    users: Users
    devices: Devices
    characters: Characters
    conversations: Conversations
    reports: Reports
    writer: TurnWriter

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool | None = None) -> Store:
        """Connect to the configured database, bring its schema up to date (unless
        ``database.auto_migrate`` is off) and add the built-in characters."""
        config = settings.database
        database = await open_database(
            database_url(config.url, settings.data_dir),
            migrate=config.auto_migrate if migrate is None else migrate,
            timeout_s=config.connect_timeout_s,
            pool_size=config.pool_size,
            max_overflow=config.max_overflow,
        )
        store = cls(
            database=database,
            users=Users(database),
            devices=Devices(database),
            characters=Characters(database),
            conversations=Conversations(database),
            reports=Reports(database),
            writer=TurnWriter(
                database,
                max_queued=config.write_queue_size,
                error_window_s=config.error_repeat_window_s,
            ),
        )
        await store.characters.install_built_in()
        return store

    async def close(self) -> None:
        await self.writer.close()
        await self.database.close()


__all__ = ["Database", "Store"]
