"""What the store hands out: plain frozen records, detached from the database session."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    """Per-device overrides; None: the server's default."""

    character: str | None = None
    """A character's slug."""
    volume: int | None = None
    pitch: float | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Device:
    id: int
    name: str
    mac: str | None
    created_at: float
    revoked_at: float | None
    user: str | None = None
    user_id: int | None = None
    settings: DeviceSettings = field(default_factory=DeviceSettings)
    last_seen_at: float | None = None
    pair_until: float | None = None
    """ElatoAI pairing window: the token endpoint answers for this MAC until then."""
    token_generation: int = 0

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def pairing(self, now: float) -> bool:
        """Whether the token endpoint may issue this device a token now."""
        return self.active and self.pair_until is not None and now < self.pair_until


@dataclass(frozen=True, slots=True)
class Character:
    slug: str
    name: str
    system_prompt: str
    description: str = ""
    first_message: str | None = None
    voice: str | None = None
    language: str | None = None
    pitch: float | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    device: str
    user: str | None
    character: str | None
    started_at: float
    ended_at: float | None
    turns: int = 0


@dataclass(frozen=True, slots=True)
class Message:
    conversation_id: str
    turn_id: int
    role: str
    text: str
    heard_text: str | None
    interrupted: bool
    audio_s: float | None
    timings: dict[str, Any] | None
    created_at: float
    session_id: str | None = None
    """The session it was said in: turn_id restarts in each (None for rows before that was kept)."""


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """One user's use on one day (UTC)."""

    day: str
    user: str
    turns: int
    audio_minutes: float
    tokens_in: int
    tokens_out: int
    characters: int
    compute_s: float
    cost_usd: float
