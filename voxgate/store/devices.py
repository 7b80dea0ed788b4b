"""Registered devices and their tokens (SQLite, in the data directory).

A token is shown once, when the device is added; only its SHA-256 is stored. Tokens are 256 random
bits, so a plain hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from voxgate.core.errors import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    mac TEXT UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL
)
"""
_MAC = re.compile(r"^([0-9A-F]{2}:){5}[0-9A-F]{2}$")


@dataclass(frozen=True, slots=True)
class Device:
    id: int
    name: str
    mac: str | None
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def normalize_mac(mac: str) -> str:
    normalized = mac.strip().upper().replace("-", ":")
    if not _MAC.fullmatch(normalized):
        raise ConfigError(f"not a MAC address: {mac!r} (expected AA:BB:CC:DD:EE:FF)")
    return normalized


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class DeviceStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def add(self, name: str, mac: str | None = None) -> tuple[Device, str]:
        """Register a device; returns it and its token (shown this once)."""
        token = secrets.token_urlsafe(32)
        mac = normalize_mac(mac) if mac else None
        with self._lock:
            try:
                cursor = self._db.execute(
                    "INSERT INTO devices (name, mac, token_sha256, created_at) VALUES (?, ?, ?, ?)",
                    (name, mac, _hash(token), time.time()),
                )
            except sqlite3.IntegrityError as exc:
                raise ConfigError(f"a device named {name!r} or with MAC {mac} exists") from exc
        device = self.get(int(cursor.lastrowid or 0))
        assert device is not None
        return device, token

    def list(self) -> list[Device]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, mac, created_at, revoked_at FROM devices ORDER BY id"
            ).fetchall()
        return [Device(*row) for row in rows]

    def get(self, device_id: int) -> Device | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, mac, created_at, revoked_at FROM devices WHERE id = ?",
                (device_id,),
            ).fetchone()
        return Device(*row) if row else None

    def by_mac(self, mac: str) -> Device | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, mac, created_at, revoked_at FROM devices WHERE mac = ?",
                (normalize_mac(mac),),
            ).fetchone()
        return Device(*row) if row else None

    def authenticate(self, token: str) -> Device | None:
        """The active device this token belongs to, or None."""
        if not token:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, mac, created_at, revoked_at FROM devices WHERE token_sha256 = ?",
                (_hash(token),),
            ).fetchone()
        device = Device(*row) if row else None
        return device if device is not None and device.active else None

    def revoke(self, name: str) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "UPDATE devices SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (time.time(), name),
            )
        return cursor.rowcount > 0


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison for shared secrets."""
    return hmac.compare_digest(given.encode(), expected.encode())
