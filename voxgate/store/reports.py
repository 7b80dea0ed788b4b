"""Usage and cost, summed per user per day (UTC), and latency per stage over time."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from voxgate.core.errors import NotFoundError
from voxgate.store.database import Database
from voxgate.store.records import UsageSummary
from voxgate.store.schema import DeviceRow, ErrorRow, MessageRow, UsageRow, UserRow

NO_USER = "(no user)"


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    """An error a session reported to its device."""

    id: int
    device: str | None
    conversation_id: str | None
    code: str
    message: str
    created_at: float
    """When it first happened."""
    count: int = 1
    """How many times, until ``last_at``."""
    last_at: float | None = None


def day_of(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d")


class Reports:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def usage(
        self, *, user: str | None = None, since: float | None = None
    ) -> list[UsageSummary]:
        """Per user and day: turns, audio minutes, tokens, characters, compute time and cost.
        Audio minutes count both ways: speech transcribed and speech synthesised.

        Summed by the database: the admin page asks every few seconds, and rows must not be
        carried into Python (on the event loop every session's audio shares)."""
        day = self._day(UsageRow.created_at).label("day")
        query = (
            select(
                day,
                UserRow.name,
                # The usage rows of one turn share its time.
                func.count(func.distinct(UsageRow.created_at)),
                func.sum(UsageRow.audio_s),
                func.sum(UsageRow.tokens_in),
                func.sum(UsageRow.tokens_out),
                func.sum(UsageRow.characters),
                func.sum(UsageRow.compute_s),
                func.sum(UsageRow.cost_usd),
            )
            .outerjoin(UserRow, UsageRow.user_id == UserRow.id)
            .group_by(day, UserRow.name)
        )
        if since is not None:
            query = query.where(UsageRow.created_at >= since)
        async with self._db.sessions() as session:
            if user is not None:
                user_id = await session.scalar(select(UserRow.id).where(UserRow.name == user))
                if user_id is None:
                    raise NotFoundError(f"no user named {user!r}")
                query = query.where(UsageRow.user_id == user_id)
            rows = (await session.execute(query)).all()
        summaries = [
            UsageSummary(
                day=str(day_name),
                user=name or NO_USER,
                turns=int(turns),
                audio_minutes=round(float(audio_s or 0) / 60, 3),
                tokens_in=int(tokens_in or 0),
                tokens_out=int(tokens_out or 0),
                characters=int(characters or 0),
                compute_s=round(float(compute_s or 0), 3),
                cost_usd=round(float(cost or 0), 6),
            )
            for day_name, name, turns, audio_s, tokens_in, tokens_out, characters, compute_s, cost in rows
        ]
        return sorted(summaries, key=lambda s: (s.day, s.user))

    def _day(self, column: Any) -> Any:
        """The UTC day of an epoch-seconds column, as YYYY-MM-DD, in this database's dialect."""
        if self._db.is_sqlite:
            return func.strftime("%Y-%m-%d", column, "unixepoch")
        return func.to_char(func.timezone("UTC", func.to_timestamp(column)), "YYYY-MM-DD")

    async def latency(self, *, since: float | None = None) -> list[dict[str, object]]:
        """Per day: p50 and p95 of each stage of the turns' timings (milliseconds)."""
        query = select(MessageRow.created_at, MessageRow.timings).where(
            MessageRow.role == "assistant", MessageRow.timings.is_not(None)
        )
        if since is not None:
            query = query.where(MessageRow.created_at >= since)
        async with self._db.sessions() as session:
            rows = (await session.execute(query.order_by(MessageRow.created_at))).all()
        by_day: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for created_at, timings in rows:
            for stage, value in (timings or {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    by_day[day_of(created_at)][stage].append(float(value))
        return [
            {
                "day": day,
                "turns": max(len(values) for values in stages.values()),
                "stages": {
                    stage: {"p50": _percentile(values, 50), "p95": _percentile(values, 95)}
                    for stage, values in sorted(stages.items())
                },
            }
            for day, stages in sorted(by_day.items())
        ]

    async def device_turns(self) -> dict[str, int]:
        """Turns per device name, all time."""
        async with self._db.sessions() as session:
            rows = await session.execute(
                select(DeviceRow.name, func.count(func.distinct(UsageRow.created_at)))
                .join(UsageRow, UsageRow.device_id == DeviceRow.id)
                .group_by(DeviceRow.name)
            )
            return {name: count for name, count in rows}

    async def errors(self, limit: int = 100) -> list[ErrorEntry]:
        """The last ``limit`` errors sessions reported, newest first."""
        async with self._db.sessions() as session:
            rows = await session.execute(
                select(ErrorRow, DeviceRow.name)
                .outerjoin(DeviceRow, ErrorRow.device_id == DeviceRow.id)
                .order_by(
                    func.coalesce(ErrorRow.last_at, ErrorRow.created_at).desc(), ErrorRow.id.desc()
                )
                .limit(limit)
            )
            return [
                ErrorEntry(
                    id=row.id,
                    device=device,
                    conversation_id=row.conversation_id,
                    code=row.code,
                    message=row.message,
                    created_at=row.created_at,
                    count=row.count,
                    last_at=row.last_at if row.last_at is not None else row.created_at,
                )
                for row, device in rows
            ]


def usage_total(rows: Sequence[UsageSummary]) -> UsageSummary:
    """The sum of ``rows`` (``day`` and ``user`` say "total" and "all")."""
    return UsageSummary(
        day="total",
        user="all",
        turns=sum(row.turns for row in rows),
        audio_minutes=round(sum(row.audio_minutes for row in rows), 3),
        tokens_in=sum(row.tokens_in for row in rows),
        tokens_out=sum(row.tokens_out for row in rows),
        characters=sum(row.characters for row in rows),
        compute_s=round(sum(row.compute_s for row in rows), 3),
        cost_usd=round(sum(row.cost_usd for row in rows), 6),
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[index], 1)
