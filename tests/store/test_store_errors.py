"""The store's failures in its own terms: callers catch StoreUnavailable / StoreConflict /
StoreInvalid, never SQLAlchemy's or the driver's exceptions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server_harness import free_port, open_store
from voxgate.core.errors import UnavailableError
from voxgate.store.database import Database
from voxgate.store.devices import Devices
from voxgate.store.errors import StoreConflict, StoreInvalid, StoreUnavailable
from voxgate.store.users import Users


async def test_a_database_nobody_serves_is_unavailable_and_retryable() -> None:
    database = Database(f"postgresql+asyncpg://voxgate:x@127.0.0.1:{free_port()}/voxgate")
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await Devices(database).all()
        assert caught.value.retryable
        assert isinstance(caught.value, UnavailableError)  # what the server answers 503/1013 to
        assert "the database is unavailable" in str(caught.value)
        with pytest.raises(StoreUnavailable):
            await database.revision()
    finally:
        await database.close()


async def test_a_name_taken_is_a_conflict_with_a_clear_message(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        await store.users.add("ann")
        with pytest.raises(StoreConflict, match="a user named 'ann' exists"):
            await Users(store.database).add("ann")
        await store.devices.add("kitchen")
        with pytest.raises(StoreConflict, match="a device named 'kitchen' exists"):
            await store.devices.add("kitchen")
    finally:
        await store.close()


async def test_an_unknown_revision_is_invalid(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        with pytest.raises(StoreInvalid):
            await store.database.upgrade("no-such-revision")
    finally:
        await store.close()
