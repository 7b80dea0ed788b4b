"""What the write queue takes: one frozen record per thing that happened, written in order."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from voxgate.core.usage import EngineUsage


@dataclass(frozen=True, slots=True)
class ConversationOpened:
    conversation_id: str
    device_id: int
    user_id: int | None
    character_id: int | None
    resumed: bool
    """True: it exists already, and is reopened."""
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class ConversationClosed:
    conversation_id: str
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class TurnRecord:
    conversation_id: str
    device_id: int
    user_id: int | None
    turn_id: int
    user_text: str | None
    """None for a turn the assistant began (the greeting)."""
    reply_text: str
    """The reply as generated."""
    heard_text: str | None
    """What the user heard, when they interrupted it."""
    interrupted: bool
    timings: dict[str, Any]
    usage: tuple[EngineUsage, ...]
    session_id: str = ""
    """The session it was said in: turn numbers restart in each, and a conversation spans many."""
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """Usage of a turn already written: engine calls that ended after it was reported (the
    LLM and TTS of an interrupted reply). ``at`` is the turn's, so it counts as that turn. Also
    a request outside any conversation (a Wyoming transcription): ``conversation_id`` None."""

    conversation_id: str | None
    device_id: int
    user_id: int | None
    usage: tuple[EngineUsage, ...]
    at: float


@dataclass(frozen=True, slots=True)
class HeardUpdate:
    """A reply already written was cut short while still playing: keep what was heard."""

    conversation_id: str
    turn_id: int
    heard_text: str
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    device_id: int | None
    conversation_id: str | None
    code: str
    message: str
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class DeviceSeen:
    """A device authenticated: its ``last_seen_at``, written with the next batch."""

    device_id: int
    at: float = field(default_factory=time.time)
    paired: bool = False
    """An ElatoAI device connected with its token: its pairing window closes."""


Record = (
    ConversationOpened
    | ConversationClosed
    | TurnRecord
    | UsageRecord
    | HeardUpdate
    | ErrorRecord
    | DeviceSeen
)
