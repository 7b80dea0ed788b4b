"""The shared state of one process alone, in its memory: what ``voxgate serve`` without Redis
has always done (the limits of :mod:`voxgate.server.ratelimit` and
:mod:`voxgate.server.policy`)."""

from __future__ import annotations

from voxgate.core.config import Settings
from voxgate.server.policy import SessionCounts
from voxgate.server.ratelimit import RateLimiter
from voxgate.server.shared import Notice, NoticeHandler, SharedState


class LocalRateLimit:
    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def allow(self, key: str) -> bool:
        return self.limiter.allow(key)

    async def retry_after_s(self, key: str) -> float:
        return self.limiter.retry_after_s(key)


class LocalSessionCaps:
    def __init__(self, cap: int) -> None:
        self.counts = SessionCounts(cap)

    async def claim(self, key: str, holder: str) -> bool:
        return self.counts.claim(key)

    async def release(self, key: str, holder: str) -> None:
        self.counts.release(key)


class LocalPresence:
    def __init__(self, replica_id: str) -> None:
        self._replica_id = replica_id
        self._sessions: dict[str, int] = {}

    async def arrive(self, device_id: int, holder: str) -> None:
        self._sessions[holder] = device_id

    async def leave(self, device_id: int, holder: str) -> None:
        self._sessions.pop(holder, None)

    async def online_devices(self) -> dict[int, set[str]]:
        return {device_id: {self._replica_id} for device_id in self._sessions.values()}

    async def live_sessions(self) -> int:
        return len(self._sessions)


class LocalNotices:
    """Delivered at once to this process's handler: there is no other replica."""

    def __init__(self) -> None:
        self.handler: NoticeHandler | None = None

    async def publish(self, notice: Notice) -> None:
        if self.handler is not None:
            await self.handler(notice)


def memory_state(settings: Settings, replica_id: str) -> SharedState:
    server = settings.server
    notices = LocalNotices()

    async def start(handler: NoticeHandler) -> None:
        notices.handler = handler

    async def close() -> None:
        notices.handler = None

    return SharedState(
        replica_id=replica_id,
        connection_limit=LocalRateLimit(RateLimiter(server.connections_per_minute)),
        turn_gate=RateLimiter(server.turns_per_minute).allow,
        session_caps=LocalSessionCaps(server.max_sessions_per_device),
        presence=LocalPresence(replica_id),
        notices=notices,
        chunks=None,
        start=start,
        close=close,
    )
