"""The errors sessions report, kept small: repeats fold into one row, and old rows go.

A device over its turn limit is refused every turn it sends, each refusal an error. One row per
refusal filled the database at ~650 MB an hour per device and buried real errors on the admin
page; here the same error (device, conversation, code, message) within ``window_s`` of its last
occurrence adds to that row's ``count`` and moves its ``last_at`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from voxgate.store.schema import ErrorRow

_ERRORS: Table = ErrorRow.__table__  # type: ignore[assignment]
MAX_MESSAGE_CHARS = 2000


@dataclass
class _Burst:
    device_id: int | None
    conversation_id: str | None
    code: str
    message: str
    first_at: float
    last_at: float
    count: int


class ErrorLike(Protocol):
    """What :func:`write_errors` reads of a record (the writer's ``ErrorRecord``)."""

    @property
    def device_id(self) -> int | None: ...
    @property
    def conversation_id(self) -> str | None: ...
    @property
    def code(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def at(self) -> float: ...


async def write_errors(
    connection: AsyncConnection, records: Sequence[ErrorLike], window_s: float
) -> None:
    """Insert ``records``, folding repeats into one row each (within the batch, and into a
    stored row whose last occurrence is at most ``window_s`` before)."""
    bursts: list[_Burst] = []
    latest: dict[tuple[int | None, str | None, str, str], _Burst] = {}
    for record in sorted(records, key=lambda r: r.at):
        message = record.message[:MAX_MESSAGE_CHARS]
        key = (record.device_id, record.conversation_id, record.code, message)
        burst = latest.get(key)
        if burst is None or record.at - burst.last_at > window_s:
            latest[key] = _Burst(*key, record.at, record.at, 1)
            bursts.append(latest[key])
        else:
            burst.last_at = record.at
            burst.count += 1
    fresh: list[dict[str, object]] = []
    for burst in bursts:
        found = await connection.scalar(
            select(_ERRORS.c.id)
            .where(
                _same(_ERRORS.c.device_id, burst.device_id),
                _same(_ERRORS.c.conversation_id, burst.conversation_id),
                _ERRORS.c.code == burst.code,
                _ERRORS.c.message == burst.message,
                _ERRORS.c.last_at >= burst.first_at - window_s,
            )
            .order_by(_ERRORS.c.last_at.desc())
            .limit(1)
        )
        if found is not None:
            await connection.execute(
                update(_ERRORS)
                .where(_ERRORS.c.id == found)
                .values(count=_ERRORS.c.count + burst.count, last_at=burst.last_at)
            )
            continue
        fresh.append(
            {
                "device_id": burst.device_id,
                "conversation_id": burst.conversation_id,
                "code": burst.code,
                "message": burst.message,
                "created_at": burst.first_at,
                "last_at": burst.last_at,
                "count": burst.count,
            }
        )
    if fresh:
        await connection.execute(insert(_ERRORS), fresh)


def _same(column: Any, value: object) -> ColumnElement[bool]:
    condition: ColumnElement[bool] = column.is_(None) if value is None else column == value
    return condition
