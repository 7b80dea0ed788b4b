"""How long records are kept: errors for ``database.errors_retention_days`` (30), conversations
(with their messages) and usage records for as long as their settings say (for ever unless set).

The server prunes at start and every ``database.prune_interval_s``; ``voxgate db prune`` does it
by hand. Deletes go in slices so a large first prune never holds the write lock for long.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, func, select

from voxgate.core.config import DatabaseSettings
from voxgate.core.errors import reason
from voxgate.store.database import Database
from voxgate.store.errors import translated
from voxgate.store.schema import ConversationRow, ErrorRow, UsageRow

logger = logging.getLogger(__name__)

DAY_S = 86_400.0
SLICE = 5_000
"""Rows deleted per transaction."""

_ERRORS: Table = ErrorRow.__table__  # type: ignore[assignment]
_USAGE: Table = UsageRow.__table__  # type: ignore[assignment]
_CONVERSATIONS: Table = ConversationRow.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Pruned:
    errors: int = 0
    conversations: int = 0
    usage: int = 0


async def prune(database: Database, config: DatabaseSettings, now: float | None = None) -> Pruned:
    """Delete what is older than its retention period; returns how many rows went."""
    now = time.time() if now is None else now

    def cutoff(days: float | None) -> float | None:
        return None if days is None else now - days * DAY_S

    errors = await _delete_older(
        database,
        _ERRORS,
        func.coalesce(_ERRORS.c.last_at, _ERRORS.c.created_at),
        cutoff(config.errors_retention_days),
    )
    # A conversation still open (ended_at NULL) is being talked in: it stays.
    conversations = await _delete_older(
        database,
        _CONVERSATIONS,
        _CONVERSATIONS.c.ended_at,
        cutoff(config.conversations_retention_days),
    )
    usage = await _delete_older(
        database, _USAGE, _USAGE.c.created_at, cutoff(config.usage_retention_days)
    )
    pruned = Pruned(errors, conversations, usage)
    if errors or conversations or usage:
        logger.info("pruned %s", pruned)
    return pruned


async def _delete_older(
    database: Database, table: Table, when: ColumnElement[Any], before: float | None
) -> int:
    if before is None:
        return 0
    deleted = 0
    while True:
        with translated():
            async with database.engine.begin() as connection:
                ids = select(table.c.id).where(when < before).limit(SLICE)
                result = await connection.execute(delete(table).where(table.c.id.in_(ids)))
        count = int(result.rowcount or 0)
        deleted += count
        if count < SLICE:
            return deleted
        await asyncio.sleep(0)  # let the turn writer in between slices


async def prune_periodically(database: Database, config: DatabaseSettings) -> None:
    """Until cancelled: prune now, then every ``config.prune_interval_s``. A failure (the
    database away) is logged and tried again next time."""
    while True:
        try:
            await prune(database, config)
        except Exception as exc:  # the database is away or locked: next time
            logger.warning("cannot prune old records: %s", reason(exc))
        await asyncio.sleep(config.prune_interval_s)
