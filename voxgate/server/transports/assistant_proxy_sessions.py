"""voice-assistant-proxy over HTTP: the sessions of ``POST /v1/audio``, one per device and
``session_id``, kept across requests and turns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voxgate.pipeline.voice_session import VoiceSession
from voxgate.protocols.assistant_proxy import (
    OUTPUT_RATE_HZ,
    PROTOCOL,
    ChunkLedger,
    ReplyCollector,
)
from voxgate.server.context import ServerContext
from voxgate.server.policy import limit_key
from voxgate.store.records import Device

# -- the HTTP path's sessions -----------------------------------------------------------------

IDLE_EXPIRY_S = 300.0
MAX_SESSIONS_PER_DEVICE = 8


class Refused(Exception):
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


@dataclass(eq=False)
class HttpSession:
    key: tuple[str, str]
    """The device's limit key (``server.policy.limit_key``) and the ``session_id`` it chose."""
    session: VoiceSession
    ledger: ChunkLedger = field(default_factory=ChunkLedger)
    collector: ReplyCollector = field(default_factory=ReplyCollector)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = 0.0
    users: int = 0
    """Requests (and reply bodies) using it now; it is not expired or evicted meanwhile."""


class HttpSessions:
    """One VoiceSession per device and ``session_id``, kept across requests and turns.

    Owned by the app (``app.state``). Idle sessions are closed lazily, on the next request; a
    device over its cap loses its least recently used idle session.
    """

    def __init__(
        self,
        ctx: ServerContext,
        *,
        idle_s: float = IDLE_EXPIRY_S,
        per_device: int = MAX_SESSIONS_PER_DEVICE,
        clock: Callable[[], float] = time.monotonic,
        per_turn: bool = False,
    ) -> None:
        self.ctx = ctx
        self.per_turn = per_turn
        """Close each session once its turn is answered (the chunks live in the shared state:
        the next turn may land on another replica, so this one's history would go stale)."""
        self.idle_s = idle_s
        self.per_device = per_device
        self._clock = clock
        self._entries: dict[tuple[str, str], HttpSession] = {}
        self._closing: set[asyncio.Task[None]] = set()
        """By (limit key, session_id): a device's ids, or on the shared token one client's."""
        self._turn = ctx.settings.turn.model_copy(update={"barge_in": False})
        # On the HTTP path the device ends the turn (``is_final``); server VAD only finds speech.
        self._detection = ctx.client_commit()

    @classmethod
    def of(cls, app: Any, ctx: ServerContext) -> HttpSessions:
        sessions: HttpSessions | None = getattr(app.state, "assistant_proxy_sessions", None)
        if sessions is None or sessions.ctx is not ctx:  # a new lifespan, a new context
            sessions = app.state.assistant_proxy_sessions = cls(ctx, per_turn=ctx.state.distributed)
        return sessions

    def __len__(self) -> int:
        return len(self._entries)

    async def acquire(
        self, device: Device, session_id: str, client_host: str | None = None
    ) -> HttpSession:
        """The session, opened if new; ``release`` it when done. Raises Refused."""
        now = self._clock()
        victims = [
            self._entries.pop(key)
            for key, entry in list(self._entries.items())
            if not entry.users and now - entry.last_used > self.idle_s
        ]
        key = (limit_key(device, client_host), session_id)
        try:
            entry = self._entries.get(key) or await self._open(device, key, victims)
            self.hold(entry)  # before any await: no other request may expire it now
        finally:
            await self._close(victims)
        return entry

    def hold(self, entry: HttpSession) -> None:
        entry.users += 1
        entry.last_used = self._clock()

    def release(self, entry: HttpSession) -> None:
        entry.users -= 1
        entry.last_used = self._clock()
        if self.per_turn and not entry.users and self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
            closing = asyncio.get_running_loop().create_task(self._close([entry]))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def _open(
        self, device: Device, key: tuple[str, str], victims: list[HttpSession]
    ) -> HttpSession:
        ctx = self.ctx
        if ctx.shutting_down.is_set():
            raise Refused(503, "server shutting down")
        bucket = key[0]
        mine = [entry for (owner, _), entry in self._entries.items() if owner == bucket]
        idle = [entry for entry in mine if not entry.users]
        if len(mine) >= self.per_device and not idle:
            raise Refused(429, "too many sessions for this device")
        # Per turn (shared chunks), a session is no new connection: the turn limit holds it.
        if not self.per_turn and not await ctx.connection_limit.allow(bucket):
            raise Refused(429, "too many new sessions; try again later")
        if len(mine) >= self.per_device:
            oldest = min(idle, key=lambda entry: entry.last_used)
            victims.append(oldest)
            del self._entries[oldest.key]
        session = await ctx.open_session(
            device,
            output_rate_hz=OUTPUT_RATE_HZ,
            turn=self._turn,
            limit_key=bucket,
            detection=self._detection,
        )
        ctx.metrics.sessions.labels(PROTOCOL).inc()
        ctx.metrics.sessions_total.labels(PROTOCOL).inc()
        opened = HttpSession(key, session)
        raced = self._entries.get(key)
        if raced is not None:  # another request opened it while this one read the history
            victims.append(opened)
            return raced
        self._entries[key] = opened
        return opened

    async def _close(self, entries: list[HttpSession]) -> None:
        for entry in entries:
            await self.ctx.close_session(entry.session)
            self.ctx.metrics.sessions.labels(PROTOCOL).dec()
