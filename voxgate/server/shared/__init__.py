"""State the replicas of one deployment share: limits, session caps, who is online, notices
(revocations), the proxy's chunked HTTP sessions.

Each is a small protocol with two implementations: in this process's memory (:mod:`.memory`,
one ``voxgate serve`` alone, as before) and in Redis (:mod:`.redis_state`, several replicas
behind a load balancer). ``[redis] url`` picks Redis; without it nothing here needs Redis, and
only :mod:`.redis_state` imports it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from voxgate.core.config import Settings
from voxgate.protocols.assistant_proxy import AudioChunk, ChunkStatus


class RateLimit(Protocol):
    """Events per key in a sliding minute (connections, turns)."""

    async def allow(self, key: str) -> bool:
        """Count one event for ``key`` if it is within the limit; False if it is not."""
        ...

    async def retry_after_s(self, key: str) -> float: ...


class SessionCaps(Protocol):
    """Sessions open per key, held to a cap. ``holder`` names one session (unique)."""

    async def claim(self, key: str, holder: str) -> bool:
        """Count ``holder`` for ``key``; False (nothing counted) when at the cap."""
        ...

    async def release(self, key: str, holder: str) -> None: ...


class Presence(Protocol):
    """Which devices have a live session, on any replica."""

    async def arrive(self, device_id: int, holder: str) -> None: ...

    async def leave(self, device_id: int, holder: str) -> None: ...

    async def online_devices(self) -> dict[int, set[str]]:
        """Each device with a live session, and the replicas holding its sessions."""
        ...

    async def live_sessions(self) -> int:
        """Sessions live on every replica."""
        ...


class NoticeKind(StrEnum):
    REVOKED = "revoked"
    """A device was revoked: its live sessions end, wherever they are."""
    DEVICE_CHANGED = "device_changed"
    """A device's settings or pairing changed: what a replica remembers of it is dropped."""


@dataclass(frozen=True, slots=True)
class Notice:
    kind: NoticeKind
    device_id: int
    origin: str = ""
    """The replica that published it."""


NoticeHandler = Callable[[Notice], Awaitable[None]]


class Notices(Protocol):
    """Published to every replica (this one included)."""

    async def publish(self, notice: Notice) -> None: ...


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    status: ChunkStatus
    audio: bytes = b""
    """The final chunk: the whole utterance, every replica's chunks in order."""


class ChunkSessions(Protocol):
    """The proxy's ``POST /v1/audio`` chunks kept where every replica sees them, so the chunks
    of one ``session_id`` may land on different replicas."""

    async def add(self, bucket: str, chunk: AudioChunk) -> ChunkOutcome:
        """Take a chunk: a retried index is DUPLICATE (nothing kept); the final one takes the
        utterance gathered so far and starts the next turn's count."""
        ...


class SharedStateError(Exception):
    """The shared state is unreachable (Redis away): the caller goes on without it."""


class ChunkTooLarge(SharedStateError):
    """The utterance gathered for one chunked turn is over its limit."""


@dataclass
class SharedState:
    replica_id: str
    connection_limit: RateLimit
    turn_gate: Callable[[str], bool]
    """Whether the device (limit key) may start one more turn: asked inside the pipeline,
    synchronously (:mod:`.redis_state` answers from this replica and corrects from Redis)."""
    session_caps: SessionCaps
    presence: Presence
    notices: Notices
    chunks: ChunkSessions | None
    """None: the chunks of a session are fed to its session on this replica as they come."""
    start: Callable[[NoticeHandler], Awaitable[None]]
    close: Callable[[], Awaitable[None]]

    @property
    def distributed(self) -> bool:
        """Shared with other replicas (Redis)."""
        return self.chunks is not None


def replica_name(settings: Settings) -> str:
    return settings.server.replica_id or f"{socket.gethostname()}-{os.getpid()}"


def open_shared_state(settings: Settings) -> SharedState:
    """Redis when ``redis.url`` is set, else this process's memory."""
    if settings.redis.url is None:
        from voxgate.server.shared.memory import memory_state

        return memory_state(settings, replica_name(settings))
    from voxgate.server.shared.redis_state import redis_state

    return redis_state(settings, replica_name(settings))


__all__ = [
    "ChunkOutcome",
    "ChunkSessions",
    "ChunkTooLarge",
    "Notice",
    "NoticeHandler",
    "NoticeKind",
    "Notices",
    "Presence",
    "RateLimit",
    "SessionCaps",
    "SharedState",
    "SharedStateError",
    "open_shared_state",
]
