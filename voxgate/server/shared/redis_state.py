"""The shared state in Redis, for several replicas (the only module that imports ``redis``).

- Limits: a sorted set per key of the last minute's events, trimmed and counted in one script
  (Redis's clock, so replicas' clocks need not agree).
- Session caps and presence: sorted sets whose members (one per session) expire; each replica
  renews its own every ``redis.heartbeat_s``. A replica that dies (kill -9) renews nothing, so
  after ``redis.presence_ttl_s`` its sessions no longer count against a device's cap nor show it
  online.
- Notices: one pub/sub channel; each replica acts on what it receives (its own included).
- Chunk sessions: the last chunk index and the audio so far, with an expiry renewed by each
  chunk; the final chunk takes the audio and deletes both, in one script.

Redis away: admission goes on without the shared counts (logged), rather than refusing every
device; a notice is then acted on by this replica alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from voxgate.core.config import Settings
from voxgate.protocols.assistant_proxy import AudioChunk, ChunkStatus
from voxgate.server.shared import (
    ChunkOutcome,
    ChunkTooLarge,
    Notice,
    NoticeHandler,
    NoticeKind,
    SharedState,
    SharedStateError,
)

logger = logging.getLogger(__name__)

_NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
_SLIDING_WINDOW = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + tonumber(ARGV[2]) - now}
end
redis.call('ZADD', KEYS[1], now, now .. ':' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, 0}
"""
)
_CLAIM = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[3])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)
_RENEW = (
    _NOW_MS
    + """
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + tonumber(ARGV[1]), ARGV[i + 1])
  redis.call('PEXPIRE', key, ARGV[1])
end
return #KEYS
"""
)
_LIVE = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
)
_CHUNK = """
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) <= last then return {'duplicate', ''} end
if ARGV[2] == '1' then
  local audio = (redis.call('GET', KEYS[2]) or '') .. ARGV[3]
  redis.call('DEL', KEYS[1], KEYS[2])
  return {'final', audio}
end
if redis.call('STRLEN', KEYS[2]) + string.len(ARGV[3]) > tonumber(ARGV[5]) then
  return {'too_large', ''}
end
redis.call('APPEND', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {'partial', ''}
"""

MAX_CHUNKED_UTTERANCE_BYTES = 16_000 * 2 * 120
"""Two minutes of 16 kHz PCM16 at most per chunked turn (the session cuts turns far sooner)."""


class RedisShared:
    """One connection pool, the scripts, and what this replica holds (renewed by heartbeat)."""

    def __init__(self, settings: Settings, replica_id: str) -> None:
        config = settings.redis
        assert config.url is not None
        self.replica_id = replica_id
        self.prefix = config.key_prefix
        self.ttl_ms = round(config.presence_ttl_s * 1000)
        self.heartbeat_s = config.heartbeat_s
        self.chunk_ttl_ms = round(config.chunk_session_ttl_s * 1000)
        self.client = aioredis.Redis.from_url(
            config.url,
            socket_timeout=config.timeout_s,
            socket_connect_timeout=config.timeout_s,
            health_check_interval=30,
        )
        self.sliding_window = self.client.register_script(_SLIDING_WINDOW)
        self.claim_script = self.client.register_script(_CLAIM)
        self.renew_script = self.client.register_script(_RENEW)
        self.live_script = self.client.register_script(_LIVE)
        self.chunk_script = self.client.register_script(_CHUNK)
        self.held: dict[str, str] = {}
        """What this replica renews: member (``holder``, or presence's member) → sorted set."""
        self.handler: NoticeHandler | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._complaints: dict[str, float] = {}

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def complain(self, what: str, exc: BaseException) -> None:
        """Log a failure of Redis, once in ten seconds per kind (it may fail for every call)."""
        now = time.monotonic()
        if now - self._complaints.get(what, -1e9) >= 10:
            self._complaints[what] = now
            logger.warning("Redis: %s failed (%s); going on without it", what, exc)

    # -- background: heartbeat and notices -----------------------------------------------

    async def start(self, handler: NoticeHandler) -> None:
        self.handler = handler
        self._tasks = [
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(self._listen(handler)),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            # Leave at once rather than after the expiry: the caps and presence are right now.
            async with self.client.pipeline(transaction=False) as pipe:
                for member, key in self.held.items():
                    pipe.zrem(key, member)
                await pipe.execute()
        await self.client.aclose()

    async def renew(self) -> None:
        held = list(self.held.items())
        if held:
            await self.renew_script(
                keys=[key for _, key in held], args=[self.ttl_ms, *(m for m, _ in held)]
            )
        await self.renew_script(keys=[self.key("replicas")], args=[self.ttl_ms, self.replica_id])

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self.renew()
            except (RedisError, OSError) as exc:
                self.complain("the heartbeat", exc)
            await asyncio.sleep(self.heartbeat_s)

    async def _listen(self, handler: NoticeHandler) -> None:
        channel = self.key("notices")
        while True:
            try:
                async with self.client.pubsub() as pubsub:
                    await pubsub.subscribe(channel)
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message is not None and message["type"] == "message":
                            await self._deliver(handler, message["data"])
            except (RedisError, OSError) as exc:
                self.complain("listening for notices", exc)
                await asyncio.sleep(1.0)

    async def _deliver(self, handler: NoticeHandler, data: bytes) -> None:
        try:
            fields: dict[str, Any] = json.loads(data)
            notice = Notice(
                NoticeKind(fields["kind"]), int(fields["device_id"]), str(fields["origin"])
            )
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("Redis: an unreadable notice (%s): %r", exc, data[:200])
            return
        try:
            await handler(notice)
        except Exception:
            logger.exception("acting on %s failed", notice)

    async def publish(self, notice: Notice) -> None:
        data = json.dumps(
            {"kind": notice.kind.value, "device_id": notice.device_id, "origin": self.replica_id}
        )
        try:
            await self.client.publish(self.key("notices"), data)
        except (RedisError, OSError) as exc:
            self.complain("publishing a notice", exc)
            if self.handler is not None:
                await self.handler(notice)  # this replica at least


class RedisRateLimit:
    def __init__(self, shared: RedisShared, name: str, per_minute: int) -> None:
        self._shared = shared
        self._name = name
        self.per_minute = per_minute
        self._retry_after: dict[str, float] = {}

    async def allow(self, key: str) -> bool:
        shared = self._shared
        try:
            allowed, retry_ms = await shared.sliding_window(
                keys=[shared.key("limit", self._name, key)],
                args=[self.per_minute, 60_000, secrets.token_hex(4)],
            )
        except (RedisError, OSError) as exc:
            shared.complain(f"the {self._name} limit", exc)
            return True
        if allowed:
            self._retry_after.pop(key, None)
            return True
        self._retry_after[key] = max(0.0, int(retry_ms) / 1000)
        return False

    async def retry_after_s(self, key: str) -> float:
        return self._retry_after.get(key, 0.0)


class SharedTurnGate:
    """The turn limit across replicas, asked synchronously inside the pipeline: a turn is let
    through at once and counted in Redis meanwhile; once Redis says the device is over its
    limit, its turns are refused here until the window lets one through (so at most one turn
    more than the limit per replica)."""

    def __init__(self, limit: RedisRateLimit) -> None:
        self._limit = limit
        self._blocked_until: dict[str, float] = {}
        self._counting: set[asyncio.Task[None]] = set()

    def __call__(self, key: str) -> bool:
        if self._blocked_until.get(key, 0.0) > time.monotonic():
            return False
        self._blocked_until.pop(key, None)
        task = asyncio.get_running_loop().create_task(self._count(key))
        self._counting.add(task)
        task.add_done_callback(self._counting.discard)
        return True

    async def _count(self, key: str) -> None:
        if not await self._limit.allow(key):
            retry_s = await self._limit.retry_after_s(key)
            self._blocked_until[key] = time.monotonic() + retry_s


class RedisSessionCaps:
    def __init__(self, shared: RedisShared, cap: int) -> None:
        self._shared = shared
        self.cap = cap

    async def claim(self, key: str, holder: str) -> bool:
        shared = self._shared
        zset = shared.key("sessions", key)
        member = f"{shared.replica_id}|{holder}"
        try:
            claimed = await shared.claim_script(keys=[zset], args=[self.cap, shared.ttl_ms, member])
        except (RedisError, OSError) as exc:
            shared.complain("the session cap", exc)
            claimed = 1
        if claimed:
            shared.held[member] = zset
        return bool(claimed)

    async def release(self, key: str, holder: str) -> None:
        shared = self._shared
        member = f"{shared.replica_id}|{holder}"
        zset = shared.held.pop(member, shared.key("sessions", key))
        try:
            await shared.client.zrem(zset, member)
        except (RedisError, OSError) as exc:  # it expires by itself
            shared.complain("releasing a session", exc)


class RedisPresence:
    def __init__(self, shared: RedisShared) -> None:
        self._shared = shared
        self._zset = shared.key("online")

    def _member(self, device_id: int, holder: str) -> str:
        return f"{device_id}|{self._shared.replica_id}|{holder}"

    async def arrive(self, device_id: int, holder: str) -> None:
        shared = self._shared
        member = self._member(device_id, holder)
        shared.held[member] = self._zset
        try:
            await shared.renew_script(keys=[self._zset], args=[shared.ttl_ms, member])
        except (RedisError, OSError) as exc:  # the next heartbeat tries again
            shared.complain("presence", exc)

    async def leave(self, device_id: int, holder: str) -> None:
        shared = self._shared
        member = self._member(device_id, holder)
        shared.held.pop(member, None)
        try:
            await shared.client.zrem(self._zset, member)
        except (RedisError, OSError) as exc:
            shared.complain("presence", exc)

    async def _members(self) -> list[str]:
        shared = self._shared
        try:
            found = await shared.live_script(keys=[self._zset], args=[])
        except (RedisError, OSError) as exc:
            shared.complain("presence", exc)
            raise SharedStateError(f"Redis is unavailable: {exc}") from exc
        return [m.decode() if isinstance(m, bytes) else str(m) for m in found]

    async def online_devices(self) -> dict[int, set[str]]:
        online: dict[int, set[str]] = {}
        for member in await self._members():
            device_id, replica, _ = member.split("|", 2)
            online.setdefault(int(device_id), set()).add(replica)
        return online

    async def live_sessions(self) -> int:
        return len(await self._members())


class RedisChunkSessions:
    def __init__(self, shared: RedisShared) -> None:
        self._shared = shared

    async def add(self, bucket: str, chunk: AudioChunk) -> ChunkOutcome:
        shared = self._shared
        base = shared.key("chunks", bucket, chunk.session_id)
        try:
            status, audio = await shared.chunk_script(
                keys=[f"{base}:last", f"{base}:audio"],
                args=[
                    chunk.chunk_index,
                    "1" if chunk.is_final else "0",
                    chunk.pcm,
                    shared.chunk_ttl_ms,
                    MAX_CHUNKED_UTTERANCE_BYTES,
                ],
            )
        except (RedisError, OSError) as exc:
            shared.complain("a chunk session", exc)
            raise SharedStateError(f"Redis is unavailable: {exc}") from exc
        name = status.decode() if isinstance(status, bytes) else str(status)
        if name == "too_large":
            raise ChunkTooLarge("the utterance is too long")
        return ChunkOutcome(ChunkStatus(name), bytes(audio) if audio else b"")


def redis_state(settings: Settings, replica_id: str) -> SharedState:
    shared = RedisShared(settings, replica_id)
    server = settings.server
    return SharedState(
        replica_id=replica_id,
        connection_limit=RedisRateLimit(shared, "connections", server.connections_per_minute),
        turn_gate=SharedTurnGate(RedisRateLimit(shared, "turns", server.turns_per_minute)),
        session_caps=RedisSessionCaps(shared, server.max_sessions_per_device),
        presence=RedisPresence(shared),
        notices=shared,
        chunks=RedisChunkSessions(shared),
        start=shared.start,
        close=shared.close,
    )
