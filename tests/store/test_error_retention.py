"""Issue 13 item 2: refused turns do not fill the database. Repeats of one error fold into one
row with a count; errors (and, when configured, conversations and usage) are pruned after their
retention period. On SQLite and PostgreSQL, and through the real server with a flooding device."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import connect

from tests.fakes import Fakes
from tests.server_harness import running_server, server_settings
from voxgate.core.config import DatabaseSettings, Settings
from voxgate.core.usage import EngineUsage
from voxgate.store import Store
from voxgate.store.retention import DAY_S, prune
from voxgate.store.schema import ErrorRow
from voxgate.store.writer import (
    ConversationClosed,
    ConversationOpened,
    ErrorRecord,
    TurnRecord,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_database_url")
    return url


@pytest.fixture
async def store(db_url: str | None, tmp_path: Path) -> AsyncIterator[Store]:
    url = db_url
    opened = await Store.open(Settings(data_dir=tmp_path, database=DatabaseSettings(url=url)))
    opened.writer.start()
    yield opened
    await opened.close()


async def _rows(store: Store) -> list[tuple[str, int, float, float | None]]:
    async with store.database.sessions() as session:
        rows = await session.execute(
            select(
                ErrorRow.message, ErrorRow.count, ErrorRow.created_at, ErrorRow.last_at
            ).order_by(ErrorRow.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_repeats_fold_into_one_row_with_a_count(tmp_path: Path) -> None:
    store = await Store.open(Settings(data_dir=tmp_path))
    store.writer.start()
    device, _ = await store.devices.add("flooder")
    start = time.time()
    for i in range(5000):
        store.writer.submit(
            ErrorRecord(device.id, None, "rate_limited", "too many turns", start + i * 0.001)
        )
    store.writer.submit(ErrorRecord(device.id, None, "llm_failed", "model crashed", start + 1))
    assert await store.writer.flush(30)
    # More of the same, a later batch: still the same row.
    for i in range(10):
        store.writer.submit(
            ErrorRecord(device.id, None, "rate_limited", "too many turns", start + 10 + i)
        )
    # The same again after the repeat window (600 s): a row of its own.
    store.writer.submit(
        ErrorRecord(device.id, None, "rate_limited", "too many turns", start + 5000)
    )
    assert await store.writer.flush(30)
    rows = await _rows(store)
    listed = await store.reports.errors(10)
    await store.close()
    assert [(message, count) for message, count, _, _ in rows] == [
        ("too many turns", 5010),
        ("model crashed", 1),
        ("too many turns", 1),
    ]
    first = rows[0]
    assert first[2] == pytest.approx(start) and first[3] == pytest.approx(start + 19)
    assert (listed[0].message, listed[0].count) == ("too many turns", 1)  # newest first
    assert listed[1].count == 5010 and listed[1].last_at == pytest.approx(start + 19)


async def test_old_errors_conversations_and_usage_are_pruned(store: Store) -> None:
    device, _ = await store.devices.add("old-timer")
    now = time.time()
    old, recent = now - 40 * DAY_S, now - 1 * DAY_S
    usage = (EngineUsage(capability="llm", provider="fake", model="m", tokens_in=5),)
    for conversation, at in (("c-old", old), ("c-new", recent)):
        store.writer.submit(
            ConversationOpened(conversation, device.id, None, None, resumed=False, at=at)
        )
        store.writer.submit(
            TurnRecord(
                conversation, device.id, None, 1, "hi", "hello", None, False, {}, usage, at=at
            )
        )
        store.writer.submit(ConversationClosed(conversation, at=at))
        store.writer.submit(ErrorRecord(device.id, None, "internal", f"boom {conversation}", at))
    assert await store.writer.flush(30)

    kept_all = await prune(store.database, DatabaseSettings(errors_retention_days=None), now)
    assert kept_all.errors == kept_all.conversations == kept_all.usage == 0
    pruned = await prune(
        store.database,
        DatabaseSettings(
            errors_retention_days=30, conversations_retention_days=30, usage_retention_days=30
        ),
        now,
    )
    assert (pruned.errors, pruned.conversations, pruned.usage) == (1, 1, 1)
    assert [e.message for e in await store.reports.errors(10)] == ["boom c-new"]
    history = await store.conversations.history("old-timer")
    assert [m.text for m in history] == ["hi", "hello"]  # the recent conversation's only
    async with store.database.sessions() as session:
        from voxgate.store.schema import MessageRow, UsageRow

        assert await session.scalar(select(func.count()).select_from(MessageRow)) == 2
        assert await session.scalar(select(func.count()).select_from(UsageRow)) == 1


async def test_a_device_flooding_refused_turns_writes_one_row(tmp_path: Path) -> None:
    settings = server_settings(tmp_path, turns_per_minute=2)
    store = await Store.open(settings)
    _, token = await store.devices.add("flooder")
    engines = Fakes().engines()
    refused = 0
    async with running_server(settings, engines, store) as address:
        async with connect(
            f"ws://{address}/v1/relay", additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            await ws.send(
                json.dumps({"event": "session.start", "seq": 1, "payload": {"greeting": False}})
            )
            for seq in range(2, 302):
                await ws.send(
                    json.dumps({"event": "text.input", "seq": seq, "payload": {"text": "hi"}})
                )
            async with asyncio.timeout(30):
                while refused < 298:
                    message = json.loads(await ws.recv())
                    if message["event"] == "error" and message["payload"]["code"] == "rate_limited":
                        refused += 1
        assert await store.writer.flush(10)
    rows = [row for row in await _rows(store) if row[0].startswith("too many") or "limit" in row[0]]
    all_rows = await _rows(store)
    engines.close()
    await store.close()
    assert refused == 298
    assert len(all_rows) == 1, all_rows
    assert all_rows[0][1] == 298 and rows == all_rows
