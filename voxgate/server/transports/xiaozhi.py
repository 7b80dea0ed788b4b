"""xiaozhi-esp32 boards: the WebSocket at ``/xiaozhi/v1/`` (the OTA/bootstrap endpoint that
hands out its URL and the device's token is :mod:`voxgate.server.transports.xiaozhi_ota`).

A protocol adapter (:mod:`voxgate.server.transports.connection`) around
:mod:`voxgate.protocols.xiaozhi`. The connection: the device's token (``Authorization: Bearer``,
or the ``authorization``/``token`` query parameter), its hello within 10 s, the server's hello at
once; then the first ``listen`` that names a mode decides who ends turns: the server's VAD
(auto, realtime) or the device's ``listen stop`` (manual). (The firmware's wake word sends
``listen detect`` without a mode, then ``listen start`` with it: the detect waits for it.) Barge-in is on only in realtime mode
(the device then keeps its microphone open while it speaks, with its AEC); ``abort`` stops the
reply at once in every mode. ``listen detect`` (the device heard its wake word; xiaozhi-sdk also
sends typed text this way) starts a turn with that text, as the reference server does. With
``listening.xiaozhi_mode = "wake_word"`` the server listens for the wake word itself (boards
without one): nothing the board streams is heard until then, and its own ``detect`` opens too.

With ``features.mcp`` the server lists the device's tools (:mod:`voxgate.protocols.xiaozhi_mcp`)
and offers them to the LLM for the session; a call goes to the device and its answer back to the
LLM (:meth:`XiaozhiAdapter.call_tool`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from starlette.routing import BaseRoute, WebSocketRoute

from voxgate.core.capabilities import ToolCall, ToolSpec
from voxgate.core.config import Settings
from voxgate.core.errors import ConfigError, ProtocolError
from voxgate.core.listening import ListeningMode
from voxgate.pipeline.voice_session import VoiceSession
from voxgate.pipeline.wake_gate import WakeGatedSession
from voxgate.protocols import xiaozhi as codec
from voxgate.protocols.closing import Close, Ending
from voxgate.protocols.frames import EventEncoder
from voxgate.protocols.xiaozhi import (
    INPUT_RATE_HZ,
    OUTPUT_RATE_HZ,
    PROTOCOL,
    Abort,
    Audio,
    Hello,
    Listen,
    ListenMode,
    ListenState,
    Mcp,
    XiaozhiClosed,
    XiaozhiConnection,
)
from voxgate.protocols.xiaozhi_downlink import GOODBYE, XiaozhiEncoder
from voxgate.protocols.xiaozhi_mcp import CallResult, McpClient
from voxgate.server.auth import bearer_token
from voxgate.server.context import ServerContext
from voxgate.server.policy import shared_token_refusal
from voxgate.server.runner import SessionEnded, feed_audio
from voxgate.server.transports.connection import ProtocolAdapter, Refused, Wire, endpoint
from voxgate.store.devices import normalize_mac
from voxgate.store.records import Device

logger = logging.getLogger(__name__)

PATHS = ("/xiaozhi/v1/", "/xiaozhi/v1")
HELLO_TIMEOUT_S = codec.HELLO_TIMEOUT_S
FIRST_LISTEN_TIMEOUT_S = 10.0
"""The firmware sends ``listen`` right after the hello; a client that does not is in auto mode."""
MODE_AFTER_DETECT_S = 2.0
"""How long a ``listen detect`` without a mode waits for the ``listen start`` that names it (the
firmware sends it right after its wake word's detect); then the session opens in auto mode."""
VOLUME_TOOL = "self.audio_speaker.set_volume"
TOOL_TIMEOUT_S = 5.0
"""A device tool that has not answered by then has failed (the reply goes on)."""


def routes(settings: Settings) -> list[BaseRoute]:
    return [WebSocketRoute(path, endpoint(XiaozhiAdapter)) for path in PATHS]


def mcp_message(session_id: str, payload: dict[str, Any]) -> str:
    return codec.dump({"session_id": session_id, "type": "mcp", "payload": payload})


class XiaozhiAdapter(ProtocolAdapter):
    """A xiaozhi board's connection."""

    name = PROTOCOL

    def __init__(self) -> None:
        self.connection = XiaozhiConnection()
        self.session_id = secrets.token_hex(8)
        self.mode = ListenMode.AUTO
        self.listening = True
        self.first: Listen | None = None
        """The first ``listen`` other than a mode-less ``detect``: it says the mode."""
        self.detected: Listen | None = None
        """A mode-less ``detect`` that came before it, replayed first when the session begins."""
        self.mcp = McpClient()
        self.wire: Wire | None = None
        self.prebuffer_s = 0.0
        self.volume: int | None = None
        """The device's volume setting (``voxgate devices set NAME --volume N``), if any."""
        self._calls: dict[int, asyncio.Future[CallResult]] = {}

    def close_for(self, ending: Ending, detail: str = "") -> Close:
        return codec.close_for(ending, detail)

    async def authenticate(self, ctx: ServerContext, wire: Wire) -> Device:
        ws = wire.websocket
        headers, query = ws.headers, ws.query_params
        try:
            version = codec.parse_version_header(
                headers.get("protocol-version") or query.get("protocol_version")
            )
            self.connection = XiaozhiConnection(header_version=version)
        except XiaozhiClosed as closed:
            raise Refused(closed.close) from None
        token = bearer_token(headers) or _query_token(
            query.get("authorization") or query.get("token")
        )
        device = await ctx.authenticate(token)
        if device is None:
            raise Refused(
                self.close_for(
                    Ending.UNAUTHORIZED, "invalid token" if token else "a device token is required"
                )
            )
        refusal = shared_token_refusal(device, PROTOCOL) or _mac_refusal(
            device, headers.get("device-id") or query.get("device-id")
        )
        if refusal is not None:
            raise Refused(self.close_for(Ending.UNAUTHORIZED, refusal))
        self.wire = wire
        await self._hello(wire)
        return device

    async def _hello(self, wire: Wire) -> Hello:
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                inbound = self.connection.receive(await wire.receive())
        except TimeoutError:
            detail = f"no hello within {HELLO_TIMEOUT_S:g} s"
            raise Refused(self.close_for(Ending.TIMEOUT, detail)) from None
        except XiaozhiClosed as closed:
            raise Refused(closed.close) from None
        assert isinstance(inbound, Hello), "the connection takes nothing else first"
        await wire.send(codec.server_hello(self.session_id, sample_rate_hz=OUTPUT_RATE_HZ))
        return inbound

    async def open_session(self, ctx: ServerContext, device: Device) -> VoiceSession:
        """The session, once the first ``listen`` says the mode (what comes before it, such as
        the wake word's own audio, is dropped, as the reference server drops it)."""
        assert self.wire is not None, "authenticate() keeps it"
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_LISTEN_TIMEOUT_S) as deadline:
                while self.first is None:
                    inbound = self._take(await self.wire.receive())
                    if not isinstance(inbound, Listen):
                        continue
                    if inbound.state is ListenState.DETECT and inbound.mode is None:
                        # The board's own wake word: its mode comes in the listen start after.
                        self.detected = inbound
                        soon = loop.time() + MODE_AFTER_DETECT_S
                        deadline.reschedule(min(deadline.when() or soon, soon))
                    else:
                        self.first = inbound
        if self.first is not None and self.first.mode is not None:
            self.mode = self.first.mode
        manual = self.mode is ListenMode.MANUAL
        # Only a device in realtime mode hears the user over its own voice (its AEC).
        turn = ctx.settings.turn
        if self.mode is not ListenMode.REALTIME:
            turn = turn.model_copy(update={"barge_in": False})
        self.device_name = device.name
        self.volume = device.settings.volume
        self.prebuffer_s = (ctx.settings.server.prebuffer_ms + codec.FRAME_MS) / 1000.0
        # Hands-free on the server's wake-word engine only when configured (boards without one).
        hands_free = ctx.settings.listening.xiaozhi_mode == ListeningMode.WAKE_WORD
        return await ctx.open_session(
            device,
            output_rate_hz=OUTPUT_RATE_HZ,
            turn=turn,
            limit_key=self.limit_key,
            detection=ctx.client_commit() if manual else ctx.server_vad(),
            listening=ctx.wake_listening(device) if hands_free else None,
        )

    async def begin(self, ctx: ServerContext, wire: Wire, session: VoiceSession) -> None:
        logger.info("xiaozhi board %s connected (%s mode)", self.device_name, self.mode)
        hello = self.connection.hello
        if hello is not None and hello.mcp:
            await wire.send(mcp_message(self.session_id, self.mcp.initialize()))
        for early in (self.detected, self.first):  # in the order the board sent them
            if early is not None:
                await self._listen(session, early)

    def encoder(self, session: VoiceSession) -> EventEncoder:
        return XiaozhiEncoder(self.session_id, self.connection.version)

    async def send(self, wire: Wire, data: str | bytes) -> None:
        if data is not GOODBYE:
            await wire.send(data)
            return
        # The assistant said goodbye: let the board play what it holds (at most the prebuffer
        # and a frame) before the close makes it drop its queue.
        await asyncio.sleep(self.prebuffer_s)
        raise SessionEnded

    def _take(self, data: str | bytes) -> codec.Inbound | None:
        """One message through the connection's rules: a close raised, the rest ignored."""
        try:
            return self.connection.receive(data)
        except XiaozhiClosed as closed:
            raise Refused(closed.close) from None
        except ProtocolError as exc:
            # The firmware ignores what it does not know; so does the server (and says so).
            logger.info("ignored a xiaozhi message: %s", exc)
            return None

    async def receive(
        self, ctx: ServerContext, wire: Wire, session: VoiceSession, data: str | bytes
    ) -> Close | None:
        try:
            inbound = self._take(data)
        except Refused as refused:
            return refused.close
        match inbound:
            case Audio(pcm) if self.listening:
                await feed_audio(ctx, PROTOCOL, session, pcm, INPUT_RATE_HZ, count_bytes=False)
            case Listen():
                await self._listen(session, inbound)
            case Abort():
                session.interrupt()
            case Mcp(payload):
                await self._mcp(wire, session, payload)
        return None

    async def _listen(self, session: VoiceSession, listen: Listen) -> None:
        match listen.state:
            case ListenState.START:
                self.listening = True
                if listen.mode is not None:
                    self.mode = listen.mode
            case ListenState.STOP:
                # Push-to-talk released: the turn is over; audio until the next start is not.
                self.listening = False
                session.commit_turn()
            case ListenState.DETECT:
                self.listening = True
                if isinstance(session, WakeGatedSession):  # the board heard its word itself
                    session.heard(listen.text or "")
                session.interrupt()
                if listen.text and listen.text.strip():
                    await session.say(listen.text.strip())

    async def _mcp(self, wire: Wire, session: VoiceSession, payload: dict[str, Any]) -> None:
        step = self.mcp.receive(payload)
        for out in step.send:
            await wire.send(mcp_message(self.session_id, out))
        if step.result is not None:
            waiting = self._calls.pop(step.result.request_id, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(step.result)
        if step.dropped or step.cut_short:
            logger.warning(
                "xiaozhi board %s lists too many tools: kept %d%s%s",
                self.device_name,
                len(self.mcp.tools),
                f", dropped {step.dropped[:8]} ({len(step.dropped)})" if step.dropped else "",
                ", did not ask for its further pages" if step.cut_short else "",
            )
        if step.tools_ready and self.mcp.tools:
            specs = [ToolSpec(t.llm_name, t.description, t.input_schema) for t in self.mcp.tools]
            offered = session.offer_tools(specs, self.call_tool)
            logger.info(
                "xiaozhi board %s has tools %s (%s)",
                self.device_name,
                [t.name for t in self.mcp.tools],
                "offered to the LLM" if offered else "this session cannot call tools",
            )
            await self._set_volume(wire)

    async def _set_volume(self, wire: Wire) -> None:
        """The device's volume setting, as ElatoAI's ``auth`` sends it: once a connection.
        Not awaited: its answer comes through this reader."""
        tool = self.mcp.tool_named(VOLUME_TOOL)
        if self.volume is None or tool is None:
            return
        _, payload = self.mcp.call(tool, {"volume": self.volume})
        await wire.send(mcp_message(self.session_id, payload))

    async def call_tool(self, call: ToolCall) -> str:
        """Runs one of the device's tools for the LLM: its answer, or why it failed."""
        tool = self.mcp.tool_named(call.name)
        if tool is None or self.wire is None:
            return f"error: the device has no tool {call.name}"
        request_id, payload = self.mcp.call(tool, dict(call.arguments))
        waiting: asyncio.Future[CallResult] = asyncio.get_running_loop().create_future()
        self._calls[request_id] = waiting
        try:
            await self.wire.send(mcp_message(self.session_id, payload))
            async with asyncio.timeout(TOOL_TIMEOUT_S):
                result = await waiting
        except TimeoutError:
            return f"error: the device did not answer {tool.name} in time"
        finally:
            self._calls.pop(request_id, None)
            self.mcp.forget(request_id)
        logger.info(
            "xiaozhi board %s: %s(%s) -> %s",
            self.device_name,
            tool.name,
            call.arguments,
            result.text,
        )
        return f"error: {result.text}" if result.is_error else result.text


def _query_token(value: str | None) -> str | None:
    """``?authorization=Bearer%20TOKEN`` (the reference server's form) or a bare token."""
    if not value:
        return None
    scheme, _, rest = value.partition(" ")
    return rest.strip() or None if scheme.lower() == "bearer" else value.strip() or None


def _mac_refusal(device: Device, given: str | None) -> str | None:
    """A device registered with its MAC connects as that MAC (``Device-Id``)."""
    if device.mac is None or not given:
        return None
    try:
        mac = normalize_mac(given)
    except ConfigError:
        return f"Device-Id {given[:32]!r} is not a MAC address"
    if mac != device.mac:
        return f"this token is {device.name}'s, not {mac}'s"
    return None
