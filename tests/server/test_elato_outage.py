"""ElatoAI devices are authorized through the server context like every other token, so they get
its outage cache: while the database is away, a device that connected before gets in again, one
not seen yet is told to try again (503), never "invalid" (PostgreSQL of the test's own, paused)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fakes import Fakes, bounded
from tests.postgres_server import PostgresServer
from tests.server.test_elato_pairing import _upgrade_status
from tests.server.test_elato_session import GREETING, MAC, OTHER_MAC, SECRET, Rig
from tests.server_harness import running_server
from voxgate.core.config import CharacterSettings, DatabaseSettings, ServerSettings, Settings
from voxgate.store import Store


@bounded(90)
async def test_a_known_elato_device_gets_in_while_the_database_is_away(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database=DatabaseSettings(url=own_postgres.url()),
        server=ServerSettings(jwt_secret=SECRET),  # type: ignore[arg-type]
        character=CharacterSettings(system_prompt="You are a test.", first_message=GREETING),
    )
    store = await Store.open(settings)
    store.writer.start()
    await store.devices.add("device-0", MAC)
    await store.devices.add("device-1", OTHER_MAC)
    fakes = Fakes()
    engines = fakes.engines()
    try:
        async with running_server(settings, engines, store) as address:
            rig = Rig(address, store, fakes)
            known, unseen = await rig.token(MAC), await rig.token(OTHER_MAC)
            assert await _upgrade_status(rig, known) == 101
            await asyncio.to_thread(own_postgres.pause)
            try:
                again = await _upgrade_status(rig, known)
                first = await _upgrade_status(rig, unseen, OTHER_MAC)
            finally:
                await asyncio.to_thread(own_postgres.resume)
    finally:
        engines.close()
        await store.close()
    assert (again, first) == (101, 503)
