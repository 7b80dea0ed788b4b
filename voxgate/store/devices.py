"""Registered devices: their tokens, owners and settings.

A token is shown once, when the device is added; only its SHA-256 is stored. Tokens are 256 random
bits, so a plain hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Collection
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from voxgate.core.errors import ConfigError, NotFoundError, StoreError
from voxgate.store.database import Database
from voxgate.store.errors import StoreConflict
from voxgate.store.records import Device, DeviceSettings
from voxgate.store.schema import CharacterRow, DeviceRow, UserRow
from voxgate.store.text import check_name

PAIRING_WINDOW_S = 600.0
"""How long an ElatoAI device may fetch its token after it is added or paired again."""
_MAC = re.compile(r"^([0-9A-F]{2}:){5}[0-9A-F]{2}$")
_UNSET: Any = object()


def normalize_mac(mac: str) -> str:
    normalized = mac.strip().upper().replace("-", ":")
    if not _MAC.fullmatch(normalized):
        raise ConfigError(f"not a MAC address: {mac!r} (expected AA:BB:CC:DD:EE:FF)")
    return normalized


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison for shared secrets."""
    return hmac.compare_digest(given.encode(), expected.encode())


_User = aliased(UserRow)
_Character = aliased(CharacterRow)


def _query() -> Select[DeviceRow, str | None, str | None]:
    return (
        select(DeviceRow, _User.name, _Character.slug)
        .outerjoin(_User, DeviceRow.user_id == _User.id)
        .outerjoin(_Character, DeviceRow.character_id == _Character.id)
    )


def _record(row: DeviceRow, user: str | None, character: str | None) -> Device:
    return Device(
        id=row.id,
        name=row.name,
        mac=row.mac,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        user=user,
        user_id=row.user_id,
        settings=DeviceSettings(character, row.volume, row.pitch, row.language),
        last_seen_at=row.last_seen_at,
        pair_until=row.pair_until,
        token_generation=row.token_generation,
    )


class Devices:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def add(
        self,
        name: str,
        mac: str | None = None,
        *,
        user: str | None = None,
        pairing_window_s: float = PAIRING_WINDOW_S,
    ) -> tuple[Device, str]:
        """Register a device; returns it and its token (shown this once). With a MAC, its
        ElatoAI pairing window opens for ``pairing_window_s``."""
        name = _name(name)
        token = secrets.token_urlsafe(32)
        mac = normalize_mac(mac) if mac else None
        async with self._db.sessions.begin() as session:
            user_id = await _user_id(session, user) if user else None
            row = DeviceRow(
                name=name,
                mac=mac,
                token_sha256=token_hash(token),
                user_id=user_id,
                created_at=time.time(),
                pair_until=time.time() + pairing_window_s if mac else None,
            )
            session.add(row)
            try:
                await session.flush()
            except IntegrityError:
                taken = f"a device named {name!r}" + (f" or with MAC {mac}" if mac else "")
                raise StoreConflict(f"{taken} exists") from None
            device_id = row.id
        return await self.get(device_id), token

    async def ensure(self, name: str) -> Device:
        """A device without a token of its own (the web page, the shared token): made if new."""
        try:
            async with self._db.sessions.begin() as session:
                found = await session.scalar(select(DeviceRow.id).where(DeviceRow.name == name))
                if found is None:
                    session.add(DeviceRow(name=name, created_at=time.time()))
        except StoreConflict:
            pass  # made meanwhile by a concurrent request (the first devices on a shared token)
        try:
            return await self.by_name(name)
        except NotFoundError:  # pragma: no cover - only if deleted between the two statements
            raise StoreError(f"device {name!r} vanished while being made") from None

    async def all(self) -> list[Device]:
        async with self._db.sessions() as session:
            rows = await session.execute(_query().order_by(DeviceRow.id))
            return [_record(*row) for row in rows]

    async def get(self, device_id: int) -> Device:
        return await self._one(DeviceRow.id == device_id, f"no device with id {device_id}")

    async def by_name(self, name: str) -> Device:
        return await self._one(DeviceRow.name == name, f"no device named {name!r}")

    async def by_mac(self, mac: str) -> Device | None:
        try:
            return await self._one(DeviceRow.mac == normalize_mac(mac), "")
        except NotFoundError:
            return None

    async def authenticate(self, token: str, *, note_seen: bool = True) -> Device | None:
        """The active device this token belongs to, or None. ``note_seen`` also writes its
        ``last_seen_at`` now; the server instead queues that write (``DeviceSeen``), so a busy
        database never holds up a login."""
        if not token:
            return None
        try:
            device = await self._one(DeviceRow.token_sha256 == token_hash(token), "")
        except NotFoundError:
            return None
        if not device.active:
            return None
        if note_seen:
            await self.seen(device.id)
        return device

    async def seen(self, device_id: int) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(DeviceRow).where(DeviceRow.id == device_id).values(last_seen_at=time.time())
            )

    async def pair(self, name: str, window_s: float = PAIRING_WINDOW_S) -> Device:
        """Open the device's ElatoAI pairing window again (a factory reset, a new device on the
        same MAC); tokens issued before stop working."""
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(DeviceRow)
                .where(DeviceRow.name == name, DeviceRow.revoked_at.is_(None))
                .values(
                    pair_until=time.time() + window_s,
                    token_generation=DeviceRow.token_generation + 1,
                )
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                raise NotFoundError(f"no active device named {name!r}")
        return await self.by_name(name)

    async def claim_pairing_token(self, device_id: int) -> str | None:
        """A new token for a device that is pairing, replacing its old one, and the end of its
        pairing (in one transaction, so two requests cannot both have one); None when the device
        is not pairing (or revoked). For firmware that fetches its own token (xiaozhi's OTA)."""
        token = secrets.token_urlsafe(32)
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(DeviceRow)
                .where(
                    DeviceRow.id == device_id,
                    DeviceRow.revoked_at.is_(None),
                    DeviceRow.pair_until > time.time(),
                )
                .values(token_sha256=token_hash(token), pair_until=None)
            )
        return token if result.rowcount else None  # type: ignore[attr-defined]

    async def revoked_among(self, device_ids: Collection[int]) -> set[int]:
        """Which of these devices are revoked (or gone)."""
        if not device_ids:
            return set()
        async with self._db.sessions() as session:
            active = await session.scalars(
                select(DeviceRow.id).where(
                    DeviceRow.id.in_(list(device_ids)), DeviceRow.revoked_at.is_(None)
                )
            )
            return set(device_ids) - set(active)

    async def revoke(self, name: str) -> bool:
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(DeviceRow)
                .where(DeviceRow.name == name, DeviceRow.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def configure(
        self,
        name: str,
        *,
        user: str | None = _UNSET,
        character: str | None = _UNSET,
        volume: int | None = _UNSET,
        pitch: float | None = _UNSET,
        language: str | None = _UNSET,
    ) -> Device:
        """Change a device's owner or settings; an argument left out is left as it is, None
        clears it."""
        values: dict[str, Any] = {}
        async with self._db.sessions.begin() as session:
            if user is not _UNSET:
                values["user_id"] = await _user_id(session, user) if user else None
            if character is not _UNSET:
                values["character_id"] = (
                    await _character_id(session, character) if character else None
                )
            if volume is not _UNSET:
                if volume is not None and not 0 <= volume <= 100:
                    raise StoreError(f"volume must be 0-100, not {volume}")
                values["volume"] = volume
            if pitch is not _UNSET:
                if pitch is not None and not 0.5 <= pitch <= 2.0:
                    raise StoreError(f"pitch must be 0.5-2.0 (1 = unchanged), not {pitch}")
                values["pitch"] = pitch
            if language is not _UNSET:
                values["language"] = language
            if values:
                result = await session.execute(
                    update(DeviceRow).where(DeviceRow.name == name).values(**values)
                )
                if not result.rowcount:  # type: ignore[attr-defined]
                    raise NotFoundError(f"no device named {name!r}")
        return await self.by_name(name)

    async def _one(self, condition: Any, missing: str) -> Device:
        async with self._db.sessions() as session:
            row = (await session.execute(_query().where(condition))).first()
        if row is None:
            raise NotFoundError(missing)
        return _record(*row)


def _name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 100:
        raise StoreError("a device name is 1-100 characters")
    if "/" in name:
        # It is a path segment of the admin API (/api/admin/devices/NAME).
        raise StoreError(f"a device name has no '/': {name!r}")
    return check_name(name, "a device name")


async def _user_id(session: Any, user: str) -> int:
    found: int | None = await session.scalar(select(UserRow.id).where(UserRow.name == user))
    if found is None:
        raise NotFoundError(f"no user named {user!r} (add one with `voxgate users add {user}`)")
    return found


async def _character_id(session: Any, slug: str) -> int:
    found: int | None = await session.scalar(
        select(CharacterRow.id).where(CharacterRow.slug == slug)
    )
    if found is None:
        raise NotFoundError(f"no character {slug!r} (see `voxgate characters list`)")
    return found
