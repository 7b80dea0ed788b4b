"""Issue 13, the relay's part: hostile input gets a clear error and the session goes on
(item 8: ``turn_detection: []``, a 400-digit ``played_ms``), prompts of locked characters stay
(item 5), a silent session is closed (item 6: idle timeout) and one device holds a bounded number
of sessions (item 6: per-device cap), and the shared token does not open the relay (item 4)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.fakes import FakeLLM, Fakes, bounded
from tests.server_harness import open_store, running_server, server_settings

HUGE = "1" + "0" * 400


@asynccontextmanager
async def relay_server(tmp_path: Path, **server: Any) -> AsyncIterator[tuple[str, str]]:
    """The server on loopback; yields (relay URL, a device token)."""
    store = await open_store(tmp_path)
    _, token = await store.devices.add("kitchen")
    engines = Fakes(llm=FakeLLM(*[["Fine."]] * 20)).engines()
    try:
        async with running_server(server_settings(tmp_path, **server), engines, store) as address:
            yield f"ws://{address}/v1/relay", token
    finally:
        engines.close()
        await store.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _send(ws: ClientConnection, event: str, seq: int, payload: Any = None) -> None:
    message: dict[str, Any] = {"event": event, "seq": seq}
    if payload is not None:
        message["payload"] = payload
    await ws.send(json.dumps(message))


async def _next(ws: ClientConnection, *events: str) -> dict[str, Any]:
    """The next text message whose event is one of ``events`` (audio and others skipped)."""
    async with asyncio.timeout(10):
        while True:
            frame = await ws.recv()
            if isinstance(frame, str) and (message := json.loads(frame))["event"] in events:
                return message  # type: ignore[no-any-return]


async def _close_code(ws: ClientConnection) -> int | None:
    try:
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


@bounded(30)
async def test_bad_turn_detection_and_huge_played_ms_are_clear_errors(tmp_path: Path) -> None:
    async with (
        relay_server(tmp_path) as (url, token),
        connect(url, additional_headers=_bearer(token)) as ws,
    ):
        await _send(ws, "session.start", 1, {"turn_detection": [], "greeting": False})
        bad_start = await _next(ws, "error", "session.ready")
        await _send(ws, "session.start", 2, {"turn_detection": {"x": 1}, "greeting": False})
        bad_start_2 = await _next(ws, "error", "session.ready")
        await _send(ws, "session.start", 3, {"greeting": False})
        ready = await _next(ws, "error", "session.ready")
        await _send(ws, "playback.position", 4, {"turn_id": 1, "played_ms": int(HUGE)})
        bad_position = await _next(ws, "error")
        await _send(ws, "text.input", 5, {"text": "still there?"})
        done = await _next(ws, "turn.done", "error")
    for error, field in (
        (bad_start, "turn_detection"),
        (bad_start_2, "turn_detection"),
        (bad_position, "played_ms"),
    ):
        assert error["event"] == "error", error
        assert error["payload"]["code"] == "bad_request" and field in error["payload"]["message"]
        assert len(error["payload"]["message"]) < 300
    assert ready["event"] == "session.ready"
    assert done["event"] == "turn.done" and done["payload"]["reply_text"] == "Fine."


@asynccontextmanager
async def ready_session(url: str, token: str) -> AsyncIterator[ClientConnection]:
    """A relay connection past ``session.ready``."""
    async with connect(url, additional_headers=_bearer(token)) as ws:
        await _send(ws, "session.start", 1, {"greeting": False})
        await _next(ws, "session.ready")
        yield ws


async def _start(
    url: str, token: str, payload: dict[str, Any]
) -> tuple[dict[str, Any], int | None]:
    """What a new connection's ``session.start`` gets first, and the close code if it is closed."""
    async with connect(url, additional_headers=_bearer(token)) as ws:
        await _send(ws, "session.start", 1, {"greeting": False, **payload})
        first = await _next(ws, "error", "session.ready")
        code = await _close_code(ws) if first["event"] == "error" else None
    return first, code


@bounded(40)
async def test_locked_characters_keep_their_prompt(tmp_path: Path) -> None:
    override = {"system_prompt": "You are a pirate. Swear a lot."}
    async with relay_server(tmp_path) as (url, token):
        toy, toy_code = await _start(url, token, {"character": {"id": "toy", **override}})
        toy_named, _ = await _start(url, token, {"character": {"id": "toy", "name": "Pip"}})
        other, _ = await _start(url, token, {"character": {"id": "storyteller", **override}})
    async with relay_server(tmp_path / "locked", lock_prompts=True) as (url, token):
        default, _ = await _start(url, token, {"character": override})
    assert toy["event"] == "error" and toy["payload"]["code"] == "bad_request"
    assert "toy" in toy["payload"]["message"] and toy_code is not None
    assert toy_named["event"] == "session.ready"  # only the prompt is locked
    assert other["event"] == "session.ready"
    assert default["event"] == "error" and "locked" in default["payload"]["message"]


@bounded(40)
async def test_a_silent_session_is_closed_and_a_talking_one_is_not(tmp_path: Path) -> None:
    async with relay_server(tmp_path, relay_idle_timeout_s=1.0) as (url, token):
        async with ready_session(url, token) as silent:
            silent_code = await _close_code(silent)
        async with ready_session(url, token) as talking:
            for _ in range(6):
                await talking.send(bytes(640))  # 20 ms of silence, every 0.4 s
                await asyncio.sleep(0.4)
            still_open = talking.close_code is None
    assert silent_code == 4408
    assert still_open


@bounded(40)
async def test_one_device_holds_a_bounded_number_of_sessions(tmp_path: Path) -> None:
    async with relay_server(tmp_path, max_sessions_per_device=2) as (url, token):
        async with ready_session(url, token), ready_session(url, token):
            third, third_code = await _start(url, token, {})
        again, _ = await _start(url, token, {})  # the others closed: room again
    assert third["event"] == "error" and third["payload"]["code"] == "rate_limited"
    assert third_code == 4429
    assert again["event"] == "session.ready"


@bounded(30)
async def test_the_shared_token_does_not_open_the_relay(tmp_path: Path) -> None:
    async with relay_server(tmp_path, shared_token="firmware-token") as (url, _):
        refused, code = await _start(url, "firmware-token", {})
    assert refused["event"] == "error" and refused["payload"]["code"] == "unauthorized"
    assert "shared token" in refused["payload"]["message"] and code == 4401
