"""xiaozhi-esp32 boards over real sockets, with a board written from the firmware's protocol
(bench/xiaozhi_client.py): OTA admission, the hello, turns in auto/manual mode and binary
versions 1-3, abort, the wake word, MCP tools, bad input, /metrics. Fake engines here; the real
models are in test_xiaozhi_models.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.xiaozhi_client import FirmwareBoard
from tests.fakes import FakeLLM, Fakes, FakeSTT, FakeTTS, bounded, tone
from tests.server_harness import open_store, running_server, serving
from voxgate.core.capabilities import ToolCall
from voxgate.core.config import CharacterSettings, ServerSettings, Settings
from voxgate.pipeline import Engines
from voxgate.pipeline.engines import LimitedLLM, LimitedSTT, LimitedTTS
from voxgate.providers.openai_llm import OpenAICompatibleLLM, OpenAILLMSettings
from voxgate.server.transports import xiaozhi as xiaozhi_transport
from voxgate.server.transports.connection import Wire
from voxgate.store import Store

MAC = "AA:BB:CC:DD:EE:01"
ADMIN_TOKEN = "xiaozhi-admin-token-0123456789abcdef"
OTHER_MAC = "AA:BB:CC:DD:EE:02"


def speech(ms: int = 800) -> np.ndarray:
    """A loud tone: the fake VAD hears it as speech."""
    return tone(ms)


@dataclass
class Rig:
    address: str
    store: Store
    fakes: Fakes

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"http://{self.address}", trust_env=False)

    async def board(self, mac: str = MAC, **options: Any) -> FirmwareBoard:
        """A registered board that has booted (fetched its token) and opened its channel."""
        board = FirmwareBoard(self.address, mac, **options)
        await board.boot()
        await board.open()
        return board

    async def metrics(self) -> str:
        async with self.http() as client:
            return (await client.get("/metrics")).text


@asynccontextmanager
async def xiaozhi_server(
    tmp_path: Path,
    fakes: Fakes | None = None,
    *,
    register: tuple[str, ...] = (MAC,),
    engines: Engines | None = None,
    base: Settings | None = None,
    close_engines: bool = True,
    **server: Any,
) -> AsyncIterator[Rig]:
    """The real app on loopback with fake engines (or ``engines``: the session's real ones are
    not closed here), ``register``ed boards (pairing) and ``server`` settings over ``base``."""
    base = base or Settings(character=CharacterSettings(system_prompt="You are a test."))
    server.setdefault("admin_token", ADMIN_TOKEN)
    settings = base.model_copy(update={"data_dir": tmp_path, "server": ServerSettings(**server)})
    fakes = fakes or Fakes()
    engines = engines or fakes.engines()
    store = await open_store(tmp_path)
    for index, mac in enumerate(register):
        await store.devices.add(f"board-{index}", mac)
    try:
        async with running_server(settings, engines, store) as address:
            yield Rig(address, store, fakes)
    finally:
        if close_engines:
            engines.close()
        await store.close()


# -- OTA and admission ---------------------------------------------------------------------------


@bounded(30)
async def test_an_unknown_board_is_shown_a_code_until_an_admin_adds_it(tmp_path: Path) -> None:
    async with xiaozhi_server(tmp_path, register=()) as rig:
        board = FirmwareBoard(rig.address, OTHER_MAC)
        ota = await board.boot()
        assert set(ota) == {"server_time", "firmware", "activation"}
        code = ota["activation"]["code"]
        assert len(code) == 6 and code.isdigit()
        assert f"voxgate devices add NAME --mac {OTHER_MAC}" in ota["activation"]["message"]
        assert ota["firmware"] == {"version": "2.0.0", "url": ""}
        assert board.url is None and board.token is None  # nothing to connect to yet
        headers = {"Device-Id": OTHER_MAC, "Content-Type": "application/json"}
        activate = {"algorithm": "hmac-sha256", "challenge": ota["activation"]["challenge"]}
        async with rig.http() as http:
            waiting = await http.post("/xiaozhi/ota/activate", json=activate, headers=headers)
            assert waiting.status_code == 202
            assert (await board.boot())["activation"]["code"] == code  # the same code again
            await rig.store.devices.add("kitchen", OTHER_MAC)  # what `voxgate devices add` does
            assert (
                await http.post("/xiaozhi/ota/activate", json=activate, headers=headers)
            ).status_code == 200
        ota = await board.boot()
        assert "activation" not in ota and "mqtt" not in ota
        assert ota["websocket"]["url"] == f"ws://{rig.address}/xiaozhi/v1/"
        token = ota["websocket"]["token"]
        # Pairing is over: a later boot (or anyone with the MAC) gets the URL and no token.
        again = await board.boot()
        assert again["websocket"] == {"url": f"ws://{rig.address}/xiaozhi/v1/"}
        assert board.token == token
        await board.open()
        assert board.session_id
        await board.close()


@bounded(30)
async def test_revoked_boards_and_bad_ota_requests(tmp_path: Path) -> None:
    async with xiaozhi_server(tmp_path) as rig:
        board = await rig.board()
        await board.close()
        await rig.store.devices.revoke("board-0")
        async with rig.http() as http:
            refused = await http.post("/xiaozhi/ota/", json={}, headers={"Device-Id": MAC})
            assert refused.status_code == 403
            missing = await http.post("/xiaozhi/ota/", json={})
            assert missing.status_code == 400 and "Device-Id" in missing.json()["error"]
            bad = await http.post("/xiaozhi/ota/", content=b"\xff{", headers={"Device-Id": "nope"})
            assert bad.status_code == 400
            page = await http.get("/xiaozhi/ota/")  # the URL checked in a browser
            assert page.status_code == 200 and f"ws://{rig.address}/xiaozhi/v1/" in page.text
        await board.open(send_hello=False)  # its stored token no longer works
        await board.wait_for(lambda: board.ws is not None and board.ws.close_code is not None, 5)
        assert board.ws is not None and board.ws.close_code == 4401


@bounded(30)
async def test_auto_register_admits_an_unknown_board_in_development(tmp_path: Path) -> None:
    async with xiaozhi_server(tmp_path, register=(), auto_register_devices=True) as rig:
        board = FirmwareBoard(rig.address, OTHER_MAC)
        ota = await board.boot()
        assert "token" in ota["websocket"]
        assert (await rig.store.devices.by_mac(OTHER_MAC)) is not None


# -- turns ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
@bounded(40)
async def test_a_turn_in_auto_mode_in_each_binary_version(tmp_path: Path, version: int) -> None:
    fakes = Fakes(stt=FakeSTT(["what is the weather"]), llm=FakeLLM(["Sunny ", "all day."]))
    async with xiaozhi_server(tmp_path, fakes) as rig:
        board = await rig.board(version=version)
        await board.say(speech())
        await board.wait_for(lambda: bool(board.heard.of("tts", "stop")))
        kinds = [(m["type"], m.get("state")) for m in board.heard.messages if m["type"] != "mcp"]
        assert kinds == [
            ("stt", None),
            ("tts", "start"),
            ("llm", None),
            ("tts", "sentence_start"),
            ("tts", "stop"),
        ]
        assert board.heard.of("stt")[0]["text"] == "what is the weather"
        assert board.heard.of("tts", "sentence_start")[0]["text"] == "Sunny all day."
        assert all(m["session_id"] == board.session_id for m in board.heard.messages)
        # Three words of 100 ms at 24 kHz, as 60 ms Opus frames, all played (the fake TTS's
        # constant level is no sound once Opus drops DC; the real models' test listens).
        played = board.played_pcm()
        assert len(played) >= 0.29 * 24_000 and board.heard.dropped_packets == 0
        # The firmware listens again after tts stop; a second turn works.
        await board.say(speech())
        await board.wait_for(lambda: len(board.heard.of("tts", "stop")) == 2)
        assert 'voxgate_sessions_total{protocol="xiaozhi"} 1.0' in await rig.metrics()
        async with rig.http() as http:  # the admin page's figures count the board too
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            overview = (await http.get("/api/admin/overview", headers=admin)).json()
            devices = (await http.get("/api/admin/devices", headers=admin)).json()["devices"]
        assert overview["sessions_live"] == 1 and overview["devices_online"] == 1
        assert [d["online"] for d in devices if d["name"] == "board-0"] == [True]
        await board.close()


@bounded(40)
async def test_manual_mode_waits_for_listen_stop(tmp_path: Path) -> None:
    fakes = Fakes(stt=FakeSTT(["hello"]))
    async with xiaozhi_server(tmp_path, fakes) as rig:
        board = await rig.board(mode="manual")
        await board.say(speech(), trailing_silence_ms=1500)  # pauses do not end the turn
        assert board.heard.of("stt") == [] and fakes.stt.calls == []
        await board.listen_stop()
        await board.wait_for(lambda: bool(board.heard.of("tts", "stop")))
        assert board.heard.of("stt")[0]["text"] == "hello"
        assert board.listening is False  # manual: idle after the reply, no new listen start
        await board.close()


@bounded(40)
async def test_abort_stops_the_reply_at_once(tmp_path: Path) -> None:
    long_reply = ["word " * 60 + "end."]
    fakes = Fakes(llm=FakeLLM(long_reply), tts=FakeTTS(ms_per_word=200))
    async with xiaozhi_server(tmp_path, fakes) as rig:
        board = await rig.board()
        await board.say(speech())
        await board.wait_for(lambda: len(board.heard.audio) >= 5)
        await board.abort()
        await board.wait_for(lambda: bool(board.heard.of("tts", "stop")))
        stop_index = len(board.heard.messages)
        packets = board.heard.dropped_packets
        await asyncio.sleep(1.0)
        # Nothing more of that reply: no audio (it would be counted as dropped) and no messages.
        assert board.heard.dropped_packets - packets <= 0
        assert len(board.heard.messages) == stop_index
        played_s = sum(len(pcm) for _, pcm in board.heard.audio) / 24_000
        assert played_s < 12 * 0.2  # far from the 12 s reply
        await board.close()


@bounded(40)
async def test_the_wake_word_starts_a_turn(tmp_path: Path) -> None:
    fakes = Fakes(llm=FakeLLM(["Hi, I am listening."]))
    async with xiaozhi_server(tmp_path, fakes) as rig:
        board = await rig.board()
        await board.wake("hey voxgate")
        await board.wait_for(lambda: bool(board.heard.of("tts", "stop")))
        assert fakes.llm.calls[-1][-1].content == "hey voxgate"
        assert board.heard.of("tts", "sentence_start")[0]["text"] == "Hi, I am listening."
        await board.close()


# -- bad input -----------------------------------------------------------------------------------


async def _closed_with(
    address: str, token: str, first: str | bytes, **headers: str
) -> tuple[int, str]:
    async with connect(
        f"ws://{address}/xiaozhi/v1/",
        additional_headers={"Authorization": f"Bearer {token}", "Device-Id": MAC, **headers},
        compression=None,
    ) as ws:
        with pytest.raises(ConnectionClosed):  # (refused at once, the send may already fail)
            await ws.send(first)
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code is not None
        return ws.close_code, ws.close_reason or ""


@bounded(60)
async def test_bad_input_closes_only_that_connection(tmp_path: Path) -> None:
    fakes = Fakes(stt=FakeSTT(["still here"]))
    async with xiaozhi_server(tmp_path, fakes, register=(MAC, OTHER_MAC)) as rig:
        other = await rig.board(OTHER_MAC)
        board = FirmwareBoard(rig.address, MAC)
        await board.boot()
        token = board.token or ""
        hello = json.dumps({"type": "hello", "version": 1, "transport": "websocket"})
        assert await _closed_with(rig.address, token, "{oops") == (
            4400,
            "malformed hello: not a JSON object",
        )
        assert (await _closed_with(rig.address, token, b"\x01\x02"))[
            0
        ] == 4400  # audio before hello
        code, reason = await _closed_with(rig.address, token, hello, **{"Protocol-Version": "7"})
        assert (code, reason) == (1003, "binary protocol version 7 is not supported (1, 2, 3)")
        assert (await _closed_with(rig.address, "wrong", hello))[0] == 4401
        # Opus that does not decode, after a good hello.
        board.url = f"ws://{rig.address}/xiaozhi/v1/"  # the token it stored at its boot
        await board.open()
        assert board.ws is not None
        await board.ws.send(b"\xff\xfe\xfd not opus")
        await board.wait_for(lambda: board.ws is not None and board.ws.close_code is not None, 5)
        assert board.ws.close_code == 1007
        # A board whose own token is another MAC's.
        assert (await _closed_with(rig.address, other.token or "", hello))[0] == 4401
        # The other board never noticed.
        await other.say(speech())
        await other.wait_for(lambda: bool(other.heard.of("tts", "stop")))
        assert other.heard.of("stt")[0]["text"] == "still here"
        assert (
            'voxgate_errors_total{code="bad_audio",protocol="xiaozhi"} 1.0' in await rig.metrics()
        )
        await other.close()


# -- MCP: the device's tools reach the LLM -------------------------------------------------------


class OpenAIStandIn:
    """An OpenAI chat-completions server that calls the volume tool when it is offered and the
    user asks to turn it down, then answers from the tool's result (OpenAI's streamed shapes)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[Route("/v1/chat/completions", self.complete, methods=["POST"])]
        )

    async def complete(self, request: Request) -> StreamingResponse:
        body = await request.json()
        self.requests.append(body)
        tools = [t["function"]["name"] for t in body.get("tools", [])]
        told = any("You called tools" in m["content"] for m in body["messages"])
        if "self_audio_speaker_set_volume" in tools and not told:
            call = {"index": 0, "id": "call_1", "type": "function"}
            chunks = [
                {
                    "tool_calls": [
                        {
                            **call,
                            "function": {"name": "self_audio_speaker_set_volume", "arguments": ""},
                        }
                    ]
                },
                {"tool_calls": [{"index": 0, "function": {"arguments": '{"volume":'}}]},
                {"tool_calls": [{"index": 0, "function": {"arguments": " 40}"}}]},
            ]
            finish = "tool_calls"
        else:
            chunks = [{"content": "I turned it down "}, {"content": "to forty."}]
            finish = "stop"

        async def stream() -> AsyncIterator[bytes]:
            for delta in chunks:
                yield _sse({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            yield _sse({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


@bounded(60)
async def test_turn_it_down_calls_the_boards_volume_tool_through_an_openai_stand_in(
    tmp_path: Path,
) -> None:
    stand_in = OpenAIStandIn()
    fakes = Fakes(stt=FakeSTT(["turn it down"]))
    async with serving(stand_in.app) as llm_address:
        llm = OpenAICompatibleLLM(
            OpenAILLMSettings(base_url=f"http://{llm_address}/v1", model="stand-in")
        )
        engines = Engines(
            vad=fakes.vad,
            stt=LimitedSTT(fakes.stt, 1),
            llm=LimitedLLM(llm, 1),
            tts=LimitedTTS(fakes.tts, 1),
        )
        async with xiaozhi_server(tmp_path, fakes, engines=engines) as rig:
            board = await rig.board(volume=70)
            # The server initialised MCP (numeric ids, capabilities.vision) and listed all pages.
            await board.wait_for(
                lambda: sum(m.get("type") == "mcp" for m in board.heard.messages) >= 3
            )
            await asyncio.sleep(0.2)
            mcp = [m["payload"] for m in board.heard.messages if m["type"] == "mcp"]
            assert mcp[0]["method"] == "initialize" and mcp[0]["id"] == 1
            assert mcp[0]["params"]["capabilities"]["vision"] == {"url": "", "token": ""}
            lists = [p for p in mcp if p.get("method") == "tools/list"]
            assert [p["params"]["cursor"] for p in lists] == ["", "self.reboot"]
            await board.say(speech())
            await board.wait_for(lambda: bool(board.heard.of("tts", "stop")))
            assert board.tool_calls == [
                {"name": "self.audio_speaker.set_volume", "arguments": {"volume": 40}}
            ]
            assert board.volume == 40
            assert (
                board.heard.of("tts", "sentence_start")[0]["text"] == "I turned it down to forty."
            )
            offered = [t["function"]["name"] for t in stand_in.requests[0]["tools"]]
            # The user-only tool is not the LLM's.
            assert offered == ["self_get_device_status", "self_audio_speaker_set_volume"]
            told = stand_in.requests[1]["messages"][-1]["content"]
            assert 'self_audio_speaker_set_volume({"volume": 40}) returned: true' in told
            await board.close()
        await llm.aclose()


@bounded(30)
async def test_a_board_that_sends_no_hello_is_closed_4408(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(xiaozhi_transport, "HELLO_TIMEOUT_S", 0.3)  # the firmware's is 10 s
    async with xiaozhi_server(tmp_path) as rig:
        board = FirmwareBoard(rig.address, MAC)
        await board.boot()
        await board.open(send_hello=False)
        assert board.ws is not None
        await board.wait_for(lambda: board.ws is not None and board.ws.close_code is not None, 5)
        assert (board.ws.close_code, board.ws.close_reason) == (4408, "no hello within 0.3 s")


@bounded(60)
async def test_realtime_mode_barges_in_over_the_reply(tmp_path: Path) -> None:
    long_reply = ["word " * 60 + "end."]
    fakes = Fakes(
        stt=FakeSTT(["tell me a story", "stop please"]),
        llm=FakeLLM(long_reply, ["Okay."]),
        tts=FakeTTS(ms_per_word=200),
    )
    async with xiaozhi_server(tmp_path, fakes) as rig:
        board = await rig.board(mode="realtime")  # its microphone stays open while it speaks
        await board.say(speech())
        await board.wait_for(lambda: len(board.heard.audio) >= 5)
        await board.say(speech(), trailing_silence_ms=1200)  # the user talks over the reply
        await board.wait_for(lambda: len(board.heard.of("tts", "stop")) == 2)
        first_reply_s = sum(len(pcm) for _, pcm in board.heard.audio) / 24_000
        assert first_reply_s < 12  # cut well before its 12 s
        assert [m["text"] for m in board.heard.of("stt")] == ["tell me a story", "stop please"]
        assert board.heard.of("tts", "sentence_start")[-1]["text"] == "Okay."
        await board.close()


@bounded(60)
async def test_a_board_woken_by_its_own_wake_word_in_realtime_mode_can_barge_in(
    tmp_path: Path,
) -> None:
    long_reply = ["word " * 60 + "end."]
    fakes = Fakes(
        stt=FakeSTT(["stop please"]),
        llm=FakeLLM(long_reply, ["Okay."]),
        tts=FakeTTS(ms_per_word=200),
    )
    async with xiaozhi_server(tmp_path, fakes) as rig:
        board = FirmwareBoard(rig.address, MAC, mode="realtime")
        await board.boot()
        await board.open(listen=False)
        # The firmware's wake word (ContinueWakeWordInvoke): detect without a mode, then the
        # listen start that names it. The mode is realtime, not the auto of a mode-less listen.
        await board.wake("hey voxgate")
        await board.listen_start()
        await board.wait_for(lambda: len(board.heard.audio) >= 5)
        await board.say(speech(), trailing_silence_ms=1200)  # the user talks over the reply
        await board.wait_for(lambda: len(board.heard.of("tts", "stop")) == 2)
        first_reply_s = sum(len(pcm) for _, pcm in board.heard.audio) / 24_000
        assert first_reply_s < 12  # cut well before its 12 s
        assert fakes.llm.calls[0][-1].content == "hey voxgate"
        assert board.heard.of("tts", "sentence_start")[-1]["text"] == "Okay."
        await board.close()


@bounded(40)
async def test_the_assistants_goodbye_plays_out_before_the_close(tmp_path: Path) -> None:
    goodbye: list[Any] = ["Goodbye, talk to you soon.", ToolCall("end_session")]
    fakes = Fakes(llm=FakeLLM(goodbye), tts=FakeTTS(ms_per_word=300))
    async with xiaozhi_server(tmp_path, fakes) as rig:
        board = await rig.board()
        await board.say(speech())
        await board.wait_for(lambda: board.ws is not None and board.ws.close_code is not None, 20)
        assert board.ws is not None and board.ws.close_code == 1000
        assert board.heard.of("tts", "stop")  # the reply ended before the close
        # Five words of 300 ms: all of it reached the board before the connection closed.
        assert sum(len(pcm) for _, pcm in board.heard.audio) >= 1.5 * 24_000


@bounded(30)
async def test_the_devices_volume_setting_is_set_on_the_board(tmp_path: Path) -> None:
    async with xiaozhi_server(tmp_path) as rig:
        await rig.store.devices.configure("board-0", volume=35)
        board = await rig.board(volume=80)
        await board.wait_for(lambda: board.volume == 35, 10)
        assert board.tool_calls == [
            {"name": "self.audio_speaker.set_volume", "arguments": {"volume": 35}}
        ]
        await board.close()


@bounded(10)
async def test_a_tool_call_the_device_never_answers_is_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(xiaozhi_transport, "TOOL_TIMEOUT_S", 0.05)
    sent: list[dict[str, Any]] = []

    class SilentDevice:
        """The adapter's wire to a device that never answers a tools/call."""

        async def send(self, data: str | bytes) -> None:
            sent.append(json.loads(data)["payload"])

    adapter = xiaozhi_transport.XiaozhiAdapter()
    adapter.wire = cast(Wire, SilentDevice())
    adapter.mcp.initialize()
    adapter.mcp.receive({"jsonrpc": "2.0", "id": 1, "result": {}})
    adapter.mcp.receive({"jsonrpc": "2.0", "id": 2, "result": {"tools": [{"name": "self.light"}]}})
    answer = await adapter.call_tool(ToolCall("self_light"))
    assert answer == "error: the device did not answer self.light in time"
    late = {"jsonrpc": "2.0", "id": sent[-1]["id"], "result": {"content": [{"text": "on"}]}}
    assert adapter.mcp.receive(late).result is None  # no longer waited for
