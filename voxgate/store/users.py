"""Users: the people devices belong to, whom usage and cost are counted by."""

from __future__ import annotations

import time

from sqlalchemy import select

from voxgate.core.errors import NotFoundError, StoreError
from voxgate.store.database import Database
from voxgate.store.errors import StoreConflict
from voxgate.store.records import User
from voxgate.store.schema import UserRow
from voxgate.store.text import check_name


def _record(row: UserRow) -> User:
    return User(row.id, row.name, row.created_at)


class Users:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def add(self, name: str) -> User:
        name = name.strip()
        if not name or len(name) > 100:
            raise StoreError("a user name is 1-100 characters")
        check_name(name, "a user name")
        row = UserRow(name=name, created_at=time.time())
        try:
            async with self._db.sessions.begin() as session:
                session.add(row)
        except StoreConflict:
            raise StoreConflict(f"a user named {name!r} exists") from None
        return _record(row)

    async def all(self) -> list[User]:
        async with self._db.sessions() as session:
            rows = await session.scalars(select(UserRow).order_by(UserRow.id))
            return [_record(row) for row in rows]

    async def by_name(self, name: str) -> User:
        async with self._db.sessions() as session:
            row = await session.scalar(select(UserRow).where(UserRow.name == name))
        if row is None:
            raise NotFoundError(f"no user named {name!r}")
        return _record(row)
