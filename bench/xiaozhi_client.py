"""A xiaozhi-esp32 board as its firmware (78/xiaozhi-esp32 v2.x) behaves on the wire, written
from the firmware's protocol (``main/ota.cc``, ``main/protocols/websocket_protocol.cc``,
``main/application.cc``, ``main/mcp_server.cc``; shared/protocols/xiaozhi.md), for the tests and
the device benchmark:

- boot: ``POST`` its OTA URL with ``Device-Id``/``Client-Id``; keep ``websocket.url`` and
  ``websocket.token`` (a reply without ``token`` leaves the stored one);
- open the audio channel: ``Authorization: Bearer``, ``Protocol-Version``, ``Device-Id``,
  ``Client-Id``; send its hello; give up unless the server's hello (with ``transport``) comes
  within 10 s; then ``listen start`` in its mode;
- Opus 16 kHz 60 ms frames up, framed in its binary protocol version; Opus down at the rate of
  the server's hello, played only in the speaking state (``tts start`` .. ``tts stop``; after an
  ``abort`` until the next ``tts start``), and back to listening (auto, realtime: a new ``listen
  start``) or idle (manual) at ``tts stop``;
- its MCP server: answers only numeric ids, lists tools (in pages: the firmware caps a reply),
  ``self.get_device_status`` and ``self.audio_speaker.set_volume`` work on :attr:`volume`.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import opuslib
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.conversations import RATE_HZ
from bench.device_clients import Device, Microphone

FRAME_SAMPLES = 960
"""60 ms at 16 kHz: the firmware's uplink frame."""
HELLO_TIMEOUT_S = 10.0
TOOLS = [
    {
        "name": "self.get_device_status",
        "description": "Provides the real-time information of the device, including the "
        "current status of the audio speaker, screen, battery, network, etc.",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "self.audio_speaker.set_volume",
        "description": "Set the volume of the audio speaker. If the current volume is unknown, "
        "you must call `self.get_device_status` tool first and then call this tool.",
        "inputSchema": {
            "type": "object",
            "properties": {"volume": {"type": "integer", "minimum": 0, "maximum": 100}},
            "required": ["volume"],
        },
    },
    {
        "name": "self.reboot",
        "description": "Reboot the device",
        "inputSchema": {"type": "object", "properties": {}},
        "annotations": {"audience": ["user"]},
    },
]


def frame(version: int, payload: bytes) -> bytes:
    if version == 2:
        return (
            struct.pack(">HHIII", 2, 0, 0, int(time.monotonic() * 1000) & 0xFFFFFFFF, len(payload))
            + payload
        )
    if version == 3:
        return struct.pack(">BBH", 0, 0, len(payload)) + payload
    return payload


def unframe(version: int, data: bytes) -> bytes:
    if version == 2:
        size = struct.unpack_from(">I", data, 12)[0]
        return data[16 : 16 + size]
    if version == 3:
        size = struct.unpack_from(">H", data, 2)[0]
        return data[4 : 4 + size]
    return data


@dataclass
class Heard:
    """What the board received, in order (instants: ``time.monotonic()``)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    audio: list[tuple[float, np.ndarray]] = field(default_factory=list)
    """Decoded downlink audio played (speaking state only), at the hello's rate."""
    dropped_packets: int = 0
    """Downlink packets outside the speaking state (the firmware drops them too)."""

    def of(self, kind: str, state: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages
            if m.get("type") == kind and (state is None or m.get("state") == state)
        ]


class FirmwareBoard:
    def __init__(
        self,
        address: str,
        mac: str,
        *,
        version: int = 1,
        mode: str = "auto",
        volume: int = 70,
        mcp: bool = True,
        tools_page_size: int = 2,
    ) -> None:
        self.address = address
        self.mac = mac
        self.client_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, mac))
        self.version = version
        self.mode = mode
        self.volume = volume
        self.mcp = mcp
        self.tools_page_size = tools_page_size
        self.url: str | None = None
        self.token: str | None = None
        self.ota: dict[str, Any] = {}
        self.ws: ClientConnection | None = None
        self.session_id = ""
        self.out_rate_hz = 24_000
        self.speaking = False
        self.aborted = False
        self.listening = False
        self.heard = Heard()
        self.changed = asyncio.Condition()
        self.tool_calls: list[dict[str, Any]] = []
        self._encoder = opuslib.Encoder(RATE_HZ, 1, opuslib.APPLICATION_VOIP)
        self._decoder: opuslib.Decoder | None = None
        self._reader: asyncio.Task[None] | None = None

    async def boot(self, ota_path: str = "/xiaozhi/ota/") -> dict[str, Any]:
        """The OTA check every boot makes; raises on a status other than 200."""
        headers = {
            "Activation-Version": "1",
            "Device-Id": self.mac,
            "Client-Id": self.client_id,
            "User-Agent": "bread-compact-wifi/2.0.0",
            "Accept-Language": "en-US",
            "Content-Type": "application/json",
        }
        body = {"application": {"name": "xiaozhi", "version": "2.0.0"}, "mac_address": self.mac}
        async with httpx.AsyncClient(base_url=f"http://{self.address}", trust_env=False) as http:
            response = await http.post(ota_path, json=body, headers=headers)
        response.raise_for_status()
        self.ota = response.json()
        websocket = self.ota.get("websocket")
        if isinstance(websocket, dict):  # only the keys it has overwrite what is stored
            self.url = websocket.get("url", self.url)
            self.token = websocket.get("token", self.token)
            self.version = websocket.get("version", self.version)
        return self.ota

    async def open(self, *, send_hello: bool = True, listen: bool = True) -> None:
        assert self.url is not None, "boot() first"
        headers = {
            "Protocol-Version": str(self.version),
            "Device-Id": self.mac,
            "Client-Id": self.client_id,
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self.ws = await connect(
            self.url, additional_headers=headers, compression=None, max_size=None
        )
        self._reader = asyncio.create_task(self._read(self.ws))
        if not send_hello:
            return
        await self.send_json(
            {
                "type": "hello",
                "version": self.version,
                "features": {"mcp": self.mcp, "glyph_push": False},
                "transport": "websocket",
                "audio_params": {
                    "format": "opus",
                    "sample_rate": RATE_HZ,
                    "channels": 1,
                    "frame_duration": 60,
                },
            }
        )
        await self.wait_for(lambda: bool(self.session_id), HELLO_TIMEOUT_S)
        if listen:
            await self.listen_start()

    async def listen_start(self) -> None:
        self.listening = True
        await self.send_json(
            {"session_id": self.session_id, "type": "listen", "state": "start", "mode": self.mode}
        )

    async def listen_stop(self) -> None:
        self.listening = False
        await self.send_json({"session_id": self.session_id, "type": "listen", "state": "stop"})

    async def wake(self, word: str) -> None:
        await self.send_json(
            {"session_id": self.session_id, "type": "listen", "state": "detect", "text": word}
        )

    async def abort(self) -> None:
        """The firmware's AbortSpeaking: drop what comes until the next tts start."""
        self.aborted = True
        await self.send_json({"session_id": self.session_id, "type": "abort"})

    async def send_json(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(message, separators=(",", ":")))

    async def send_frame(self, pcm: bytes) -> None:
        """One 60 ms frame of 16 kHz PCM16, as Opus in the board's binary version."""
        assert self.ws is not None
        await self.ws.send(frame(self.version, self._encoder.encode(pcm, FRAME_SAMPLES)))

    async def say(self, samples: np.ndarray, *, trailing_silence_ms: int = 1500) -> None:
        """Speaks ``samples`` (16 kHz) into the microphone at real time, then silence."""
        tail = np.zeros(RATE_HZ * trailing_silence_ms // 1000, dtype=np.int16)
        audio = np.concatenate([samples.astype(np.int16), tail])
        audio = np.pad(audio, (0, -len(audio) % FRAME_SAMPLES))
        start = time.monotonic()
        for index in range(len(audio) // FRAME_SAMPLES):
            await asyncio.sleep(max(0.0, start + index * 0.06 - time.monotonic()))
            chunk = audio[index * FRAME_SAMPLES : (index + 1) * FRAME_SAMPLES]
            await self.send_frame(chunk.astype("<i2").tobytes())

    async def wait_for(self, condition: Any, timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            async with self.changed:
                await self.changed.wait_for(condition)

    def played_pcm(self) -> np.ndarray:
        parts = [pcm for _, pcm in self.heard.audio]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    self._audio(message)
                else:
                    await self._message(json.loads(message))
                async with self.changed:
                    self.changed.notify_all()
        except ConnectionClosed:
            pass
        async with self.changed:
            self.changed.notify_all()

    def _audio(self, data: bytes) -> None:
        if not self.speaking or self.aborted or self._decoder is None:
            self.heard.dropped_packets += 1
            return
        pcm = self._decoder.decode(unframe(self.version, data), self.out_rate_hz * 120 // 1000)
        self.heard.audio.append((time.monotonic(), np.frombuffer(pcm, dtype="<i2")))

    async def _message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "hello":
            if message.get("transport") != "websocket":
                return  # the firmware logs "Unsupported transport" and waits on
            self.session_id = str(message.get("session_id", ""))
            params = message.get("audio_params") or {}
            self.out_rate_hz = int(params.get("sample_rate", 24_000))
            self._decoder = opuslib.Decoder(self.out_rate_hz, 1)
            return
        self.heard.messages.append(message)
        if kind == "tts":
            state = message.get("state")
            if state == "start":
                self.aborted = False
                self.speaking = True
            elif state == "stop" and self.speaking:
                self.speaking = False
                if self.mode != "manual":  # speaking -> listening sends listen start again
                    await self.listen_start()
        elif kind == "mcp" and self.mcp:
            await self._mcp(message.get("payload") or {})

    async def _mcp(self, payload: dict[str, Any]) -> None:
        method, request_id = payload.get("method"), payload.get("id")
        if (
            payload.get("jsonrpc") != "2.0"
            or not isinstance(method, str)
            or method.startswith("notifications")
        ):
            return
        if not isinstance(request_id, int):
            return  # the firmware drops requests whose id is not a number
        params = payload.get("params") or {}
        if method == "initialize":
            result: dict[str, Any] = {
                "protocolVersion": "2024-11-05",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "bread-compact-wifi", "version": "2.0.0"},
            }
        elif method == "tools/list":
            names = [t["name"] for t in TOOLS]
            cursor = params.get("cursor") or ""
            start = names.index(cursor) if cursor in names else 0
            page = TOOLS[start : start + self.tools_page_size]
            result = {"tools": page}
            if start + self.tools_page_size < len(TOOLS):
                result["nextCursor"] = names[start + self.tools_page_size]
        elif method == "tools/call":
            self.tool_calls.append(params)
            result = self._call(params.get("name"), params.get("arguments") or {})
        else:
            result = {}
        if "error" in result:
            reply = {"jsonrpc": "2.0", "id": request_id, "error": {"message": result["error"]}}
        else:
            reply = {"jsonrpc": "2.0", "id": request_id, "result": result}
        await self.send_json({"session_id": self.session_id, "type": "mcp", "payload": reply})

    def _call(self, name: object, arguments: dict[str, Any]) -> dict[str, Any]:
        if name == "self.get_device_status":
            text = json.dumps({"audio_speaker": {"volume": self.volume}})
        elif name == "self.audio_speaker.set_volume":
            volume = arguments.get("volume")
            if not isinstance(volume, int) or not 0 <= volume <= 100:
                return {"error": "Missing valid argument: volume"}
            self.volume = volume
            text = "true"
        else:
            return {"error": f"Unknown tool: {name}"}
        return {"content": [{"type": "text", "text": text}], "isError": False}


class XiaozhiDevice(Device):
    """The device benchmark's board: auto mode, binary protocol 1, its microphone off while it
    speaks (the firmware turns voice processing off in the speaking state)."""

    protocol = "xiaozhi"

    def __init__(self, address: str, mac: str) -> None:
        super().__init__()
        self.board = FirmwareBoard(address, mac, mcp=False)
        self.board_reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        board = self.board
        await board.boot()
        await board.open(listen=False)
        assert board.ws is not None
        mic = Microphone(board.send_frame, FRAME_SAMPLES)
        self.start(board.ws, mic)
        await board.listen_start()

    def start(self, ws: ClientConnection, mic: Microphone) -> None:
        # The board reads its own socket; the benchmark watches what it heard.
        self._ws, self.mic = ws, mic
        self._tasks = [asyncio.create_task(mic.run()), asyncio.create_task(self._watch())]

    async def _watch(self) -> None:
        board, seen_messages, seen_audio = self.board, 0, 0
        while True:
            async with board.changed:
                await board.changed.wait()
            record = self.current
            for message in board.heard.messages[seen_messages:]:
                if message.get("type") == "stt":
                    record.turn_end_signal_t = record.turn_end_signal_t or time.monotonic()
                    record.heard = message.get("text")
                elif message.get("type") == "tts" and message.get("state") == "start":
                    if self.mic is not None:
                        self.mic.muted = True
                elif message.get("type") == "tts" and message.get("state") == "stop":
                    if self.mic is not None:
                        self.mic.muted = False
                    self.reply_over.set()
                elif message.get("type") == "alert":
                    record.errors.append(str(message.get("message")))
                    self.reply_over.set()
            seen_messages = len(board.heard.messages)
            for _, pcm in board.heard.audio[seen_audio:]:
                record.play(len(pcm) / board.out_rate_hz)
            seen_audio = len(board.heard.audio)
            if board.ws is not None and board.ws.close_code is not None:
                self.closed = f"the server closed the connection ({board.ws.close_code})"
                record.errors.append(self.closed)
                self.reply_over.set()
                return

    async def close(self) -> None:
        await super().close()
        await self.board.close()
