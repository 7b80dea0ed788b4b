"""The shared state in a real Redis (tests/redis_server.py), as two replicas see it: two
SharedState objects on one server, each with its own replica id."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voxgate.core.config import Settings
from voxgate.protocols.assistant_proxy import AudioChunk, ChunkStatus
from voxgate.server.shared import (
    ChunkTooLarge,
    Notice,
    NoticeKind,
    SharedState,
    open_shared_state,
)
from voxgate.server.shared.redis_state import MAX_CHUNKED_UTTERANCE_BYTES


def _settings(
    tmp_path: Path, redis_url: str, prefix: str, replica: str, **redis: object
) -> Settings:
    return Settings(
        data_dir=tmp_path,
        server={  # type: ignore[arg-type]
            "replica_id": replica,
            "connections_per_minute": 3,
            "turns_per_minute": 2,
            "max_sessions_per_device": 2,
        },
        redis={"url": redis_url, "key_prefix": prefix, **redis},  # type: ignore[arg-type]
    )


@pytest.fixture
async def replicas(tmp_path: Path, redis_url: str) -> AsyncIterator[list[SharedState]]:
    prefix = f"test-{secrets.token_hex(4)}"
    states = [
        open_shared_state(
            _settings(tmp_path, redis_url, prefix, name, heartbeat_s=0.1, presence_ttl_s=0.5)
        )
        for name in ("a", "b")
    ]
    yield states
    for state in states:
        await state.close()


async def test_a_device_s_connection_limit_counts_on_every_replica(
    replicas: list[SharedState],
) -> None:
    a, b = replicas
    allowed = [await (a if i % 2 else b).connection_limit.allow("device:1") for i in range(6)]
    assert allowed == [True, True, True, False, False, False]  # 3 a minute, not 3 on each
    assert 55 < await a.connection_limit.retry_after_s("device:1") <= 60
    assert await a.connection_limit.allow("device:2")  # another device has its own


async def test_the_turn_gate_holds_a_device_to_its_limit_across_replicas(
    replicas: list[SharedState],
) -> None:
    a, b = replicas
    passed = []
    for i in range(6):
        passed.append((a if i % 2 else b).turn_gate("device:1"))
        await asyncio.sleep(0.1)  # counted in Redis in the background
    # 2 a minute: at most one more through each replica before Redis's count reaches it.
    assert 2 <= sum(passed) <= 4 and passed[-2:] == [False, False], passed


async def test_session_caps_count_on_every_replica_and_a_dead_replica_s_expire(
    replicas: list[SharedState], tmp_path: Path, redis_url: str
) -> None:
    a, b = replicas
    await a.start(_ignore)
    await b.start(_ignore)
    assert await a.session_caps.claim("device:1", "s1")
    assert await b.session_caps.claim("device:1", "s2")
    assert not await a.session_caps.claim("device:1", "s3")  # the cap is 2, over both
    await b.session_caps.release("device:1", "s2")
    assert await a.session_caps.claim("device:1", "s3")
    # Replica a dies without a word: its claims stop being renewed and expire.
    await _stop_heartbeat(a)
    await asyncio.sleep(1.0)
    assert await b.session_caps.claim("device:1", "s4")
    assert await b.session_caps.claim("device:1", "s5")


async def test_presence_shows_every_replica_s_devices_until_they_leave_or_expire(
    replicas: list[SharedState],
) -> None:
    a, b = replicas
    await a.start(_ignore)
    await b.start(_ignore)
    await a.presence.arrive(7, "x")
    await b.presence.arrive(8, "y")
    await b.presence.arrive(8, "z")
    await asyncio.sleep(0.7)  # longer than the TTL: the heartbeats keep them
    online = {7: {"a"}, 8: {"b"}}  # device → the replicas holding its sessions
    assert await a.presence.online_devices() == await b.presence.online_devices() == online
    assert await a.presence.live_sessions() == 3
    await b.presence.leave(8, "y")
    assert await a.presence.online_devices() == online
    await _stop_heartbeat(b)
    await asyncio.sleep(1.0)
    assert await a.presence.online_devices() == {7: {"a"}}


async def test_a_notice_reaches_every_replica(replicas: list[SharedState]) -> None:
    a, b = replicas
    heard: dict[str, list[Notice]] = {"a": [], "b": []}

    def hearing(name: str) -> object:
        async def handle(notice: Notice) -> None:
            heard[name].append(notice)

        return handle

    await a.start(hearing("a"))  # type: ignore[arg-type]
    await b.start(hearing("b"))  # type: ignore[arg-type]
    await asyncio.sleep(0.3)  # subscribed
    await a.notices.publish(Notice(NoticeKind.REVOKED, 42, "a"))
    async with asyncio.timeout(5):
        while not (heard["a"] and heard["b"]):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert heard["b"] == [Notice(NoticeKind.REVOKED, 42, "a")] == heard["a"]


async def test_chunks_of_one_session_on_two_replicas_make_one_utterance(
    replicas: list[SharedState],
) -> None:
    a, b = replicas
    assert a.chunks is not None and b.chunks is not None
    pieces = [bytes([i]) * 3200 for i in range(4)]
    statuses = []
    for index, pcm in enumerate(pieces):
        chunks = a.chunks if index % 2 else b.chunks
        statuses.append((await chunks.add("device:1", AudioChunk("s", index, pcm))).status)
    retried = await a.chunks.add("device:1", AudioChunk("s", 2, pieces[2]))
    assert retried.status is ChunkStatus.DUPLICATE
    other = await a.chunks.add("device:1", AudioChunk("other", 0, b"\x09" * 2))
    assert other.status is ChunkStatus.PARTIAL  # another session_id keeps its own
    final = await b.chunks.add("device:1", AudioChunk("s", 4, b"\x05\x05", is_final=True))
    assert statuses == [ChunkStatus.PARTIAL] * 4
    assert final.status is ChunkStatus.FINAL and final.audio == b"".join(pieces) + b"\x05\x05"
    # The next turn counts from 0 again.
    again = await a.chunks.add("device:1", AudioChunk("s", 0, b"\x01\x01"))
    assert again.status is ChunkStatus.PARTIAL


async def test_a_chunked_utterance_over_its_limit_is_refused(replicas: list[SharedState]) -> None:
    chunks = replicas[0].chunks
    assert chunks is not None
    await chunks.add("device:1", AudioChunk("s", 0, b"\0" * MAX_CHUNKED_UTTERANCE_BYTES))
    with pytest.raises(ChunkTooLarge):
        await chunks.add("device:1", AudioChunk("s", 1, b"\0\0"))


async def _ignore(notice: Notice) -> None:
    pass


async def _stop_heartbeat(state: SharedState) -> None:
    """The replica dies: nothing is renewed, nothing released."""
    shared = state.notices  # the RedisShared behind every part
    for task in shared._tasks:  # type: ignore[attr-defined]
        task.cancel()
    await asyncio.gather(*shared._tasks, return_exceptions=True)  # type: ignore[attr-defined]
    shared.held.clear()  # type: ignore[attr-defined]
