"""The write queue: sessions hand over what happened and go on; one task writes it.

A turn is queued the moment it completes and written at once (with whatever else is waiting, in
one transaction). Submitting never blocks and never touches the database, so the audio path does
not wait for it. While the database is unreachable, records wait in the queue (bounded) and the
batch is retried with backoff; :attr:`TurnWriter.healthy` turns False so ``/healthz`` can say so.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import Table, insert, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from voxgate.store.database import Database
from voxgate.store.error_log import write_errors
from voxgate.store.schema import ConversationRow, DeviceRow, MessageRow, UsageRow
from voxgate.store.write_records import (
    ConversationClosed,
    ConversationOpened,
    DeviceSeen,
    ErrorRecord,
    HeardUpdate,
    Record,
    TurnRecord,
    UsageRecord,
)

__all__ = [
    "DROPPED",
    "ConversationClosed",
    "ConversationOpened",
    "DeviceSeen",
    "ErrorRecord",
    "HeardUpdate",
    "Record",
    "TurnRecord",
    "TurnWriter",
    "UsageRecord",
]

logger = logging.getLogger(__name__)

_CONVERSATIONS: Table = ConversationRow.__table__  # type: ignore[assignment]
_MESSAGES: Table = MessageRow.__table__  # type: ignore[assignment]
_USAGE: Table = UsageRow.__table__  # type: ignore[assignment]
_DEVICES: Table = DeviceRow.__table__  # type: ignore[assignment]

DROPPED = -1
"""The ticket of a record the full queue could not take."""


class TurnWriter:
    def __init__(
        self,
        database: Database,
        *,
        max_queued: int = 100_000,
        max_batch: int = 500,
        retry_backoff_s: tuple[float, float] = (0.2, 5.0),
        error_window_s: float = 600.0,
    ) -> None:
        self._db = database
        self._error_window_s = error_window_s
        self._queue: deque[Record] = deque()
        self._max_queued = max_queued
        self._max_batch = max_batch
        self._backoff = retry_backoff_s
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.healthy = True
        self.last_error: str | None = None
        self.written = 0
        self.dropped = 0
        # Records are numbered as submitted and leave the queue in that order: "record n is
        # written" is "more than n have left".
        self._submitted = 0
        self._done = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def pending(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="voxgate-writer")

    def submit(self, record: Record) -> int:
        """Queue ``record``; returns at once, with a ticket for :meth:`wait_written`. Full (the
        database has been away a long time): the record is dropped and counted, so memory stays
        bounded, and its ticket (-1) is never written."""
        if len(self._queue) >= self._max_queued:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.error("write queue full: %d records dropped so far", self.dropped)
            return DROPPED
        self._queue.append(record)
        self._submitted += 1
        self._idle.clear()
        self._wake.set()
        return self._submitted

    async def wait_written(self, ticket: int, timeout_s: float) -> bool:
        """Until the record of ``ticket`` is written (or refused); False after ``timeout_s``."""
        if ticket == DROPPED:
            return False
        if ticket <= self._done:
            return True
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((ticket, future))
        try:
            async with asyncio.timeout(timeout_s):
                await future
        except TimeoutError:
            return False
        finally:
            if not future.done():
                future.cancel()
                self._waiters.remove((ticket, future))
        return True

    def _left_queue(self, count: int) -> None:
        for _ in range(count):
            self._queue.popleft()
        self._done += count
        waiting = []
        for ticket, future in self._waiters:
            if ticket <= self._done:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((ticket, future))
        self._waiters = waiting

    @property
    def last_ticket(self) -> int:
        """The ticket of the newest record queued so far (0: none yet)."""
        return self._submitted

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything queued so far is written; False if ``timeout_s`` passed first
        (or the writer is not running)."""
        if self._task is None:
            return self._idle.is_set()
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (for up to ``timeout_s``), then stop."""
        if not await self.flush(timeout_s):
            logger.error("shutting down with %d records not written", self.pending)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        delay = self._backoff[0]
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue[i] for i in range(min(self._max_batch, len(self._queue)))]
            try:
                await self._write_batch(batch)
            except Exception as exc:
                if not (_refused(exc) and await self._write_singly(batch)):
                    if not _refused(exc):
                        self._unhealthy(exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._backoff[1])
                continue
            self._left_queue(len(batch))
            self._wrote(len(batch))
            delay = self._backoff[0]

    async def _write_singly(self, batch: Sequence[Record]) -> bool:
        """The database refused the batch for its content: write its records one by one and
        drop only those it refuses. False if the database went away meanwhile."""
        for record in batch:
            try:
                await self._write_batch([record])
            except Exception as exc:
                if not _refused(exc):
                    self._unhealthy(exc)
                    return False
                logger.error("dropping a record the database refuses (%r): %s", record, exc)
                self.dropped += 1
            else:
                self._wrote(1)
            self._left_queue(1)
        return True

    def _wrote(self, count: int) -> None:
        self.written += count
        if not self.healthy:
            logger.info("the database is back; %d records waiting", len(self._queue))
        self.healthy, self.last_error = True, None

    def _unhealthy(self, exc: BaseException) -> None:
        if self.healthy:
            logger.error("cannot write to the database (%s); will retry, sessions go on", exc)
        self.healthy = False
        self.last_error = (str(exc).splitlines() or [type(exc).__name__])[0][:300]

    async def _write_batch(self, batch: Sequence[Record]) -> None:
        # Core statements on a plain connection: the ORM's bulk machinery would cost the event
        # loop (and so every session's audio) several times the CPU.
        async with self._db.engine.begin() as connection:
            await _write(connection, batch, self._error_window_s)


def _refused(exc: BaseException) -> bool:
    """The database (or our own code) refuses these records: retrying will not help. Anything
    else (connection refused, timeouts, a pool exhausted, a server restarting) is worth
    retrying."""
    return isinstance(exc, IntegrityError | DataError | TypeError | ValueError | KeyError)


async def _write(
    connection: AsyncConnection, batch: Sequence[Record], error_window_s: float
) -> None:
    opened: list[dict[str, Any]] = []
    reopened: list[str] = []
    messages: list[dict[str, Any]] = []
    usage: list[dict[str, Any]] = []
    errors: list[ErrorRecord] = []
    seen: dict[int, float] = {}
    paired: set[int] = set()
    for record in batch:
        match record:
            case ConversationOpened(resumed=False):
                opened.append(
                    {
                        "id": record.conversation_id,
                        "device_id": record.device_id,
                        "user_id": record.user_id,
                        "character_id": record.character_id,
                        "started_at": record.at,
                    }
                )
            case ConversationOpened(resumed=True):
                reopened.append(record.conversation_id)
            case TurnRecord():
                messages.extend(_messages(record))
                usage.extend(_usage_rows(record))
            case UsageRecord():
                usage.extend(_usage_rows(record))
            case ErrorRecord():
                errors.append(record)
            case DeviceSeen():
                seen[record.device_id] = max(record.at, seen.get(record.device_id, 0.0))
                if record.paired:
                    paired.add(record.device_id)
    if opened:
        await connection.execute(insert(_CONVERSATIONS), opened)
    if reopened:
        await connection.execute(
            update(_CONVERSATIONS).where(_CONVERSATIONS.c.id.in_(reopened)).values(ended_at=None)
        )
    for rows, table in ((messages, _MESSAGES), (usage, _USAGE)):
        if rows:
            await connection.execute(insert(table), rows)
    if errors:
        await write_errors(connection, errors, error_window_s)
    # In the devices' order: replicas writing "last seen" for the same devices at once would
    # otherwise lock their rows in different orders and deadlock (seen with three replicas).
    for device_id, at in sorted(seen.items()):
        values: dict[str, Any] = {"last_seen_at": at}
        if device_id in paired:
            values["pair_until"] = None
        await connection.execute(update(_DEVICES).where(_DEVICES.c.id == device_id).values(values))
    # Updates last: they may refer to rows inserted above.
    for record in batch:
        match record:
            case HeardUpdate():
                await connection.execute(
                    update(_MESSAGES)
                    .where(
                        _MESSAGES.c.conversation_id == record.conversation_id,
                        _MESSAGES.c.session_id == record.session_id,
                        _MESSAGES.c.turn_id == record.turn_id,
                        _MESSAGES.c.role == "assistant",
                    )
                    .values(heard_text=record.heard_text, interrupted=True)
                )
            case ConversationClosed():
                await connection.execute(
                    update(_CONVERSATIONS)
                    .where(_CONVERSATIONS.c.id == record.conversation_id)
                    .values(ended_at=record.at)
                )


def _usage_rows(record: TurnRecord | UsageRecord) -> list[dict[str, Any]]:
    return [
        {
            **asdict(engine),
            # PostgreSQL enforces the column widths (a GGUF path can be long).
            "provider": engine.provider[:64],
            "model": engine.model[:200],
            "conversation_id": record.conversation_id,
            "device_id": record.device_id,
            "user_id": record.user_id,
            "created_at": record.at,
        }
        for engine in record.usage
    ]


def _messages(turn: TurnRecord) -> list[dict[str, Any]]:
    stt_audio = sum(u.audio_s for u in turn.usage if u.capability == "stt")
    tts_audio = sum(u.audio_s for u in turn.usage if u.capability == "tts")
    rows = []
    if turn.user_text is not None:
        rows.append(
            {
                "conversation_id": turn.conversation_id,
                "session_id": turn.session_id,
                "turn_id": turn.turn_id,
                "role": "user",
                "text": turn.user_text,
                "heard_text": None,
                "interrupted": False,
                "audio_s": stt_audio or None,
                "timings": None,
                "created_at": turn.at,
            }
        )
    rows.append(
        {
            "conversation_id": turn.conversation_id,
            "session_id": turn.session_id,
            "turn_id": turn.turn_id,
            "role": "assistant",
            "text": turn.reply_text,
            "heard_text": turn.heard_text,
            "interrupted": turn.interrupted,
            "audio_s": tts_audio or None,
            "timings": turn.timings,
            # After the user's message, so ordering by time keeps a turn's two in order.
            "created_at": turn.at + 1e-6,
        }
    )
    return rows
