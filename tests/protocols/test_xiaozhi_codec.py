"""The xiaozhi-esp32 codec on literals: the hello and its rules, listen/abort/mcp, binary
protocol versions 1-3, close codes for what a connection cannot go on from, the downlink
messages in the firmware's shapes, and the MCP client."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from voxgate.core.errors import ErrorCode, ProtocolError
from voxgate.core.events import (
    ErrorEvent,
    Interrupted,
    ReplyAudio,
    ReplyStarted,
    ReplyTextDelta,
    Transcript,
    TurnDone,
    TurnTimings,
)
from voxgate.protocols import xiaozhi
from voxgate.protocols.closing import CloseCode, Ending
from voxgate.protocols.opus import OpusDecoder, OpusPacketizer
from voxgate.protocols.xiaozhi import (
    Abort,
    Audio,
    Hello,
    Listen,
    ListenMode,
    ListenState,
    Mcp,
    Ping,
    XiaozhiClosed,
    XiaozhiConnection,
)
from voxgate.protocols.xiaozhi_downlink import XiaozhiEncoder, emotion_for
from voxgate.protocols.xiaozhi_mcp import McpClient

# What firmware v2.x sends, byte for byte (websocket_protocol.cc GetHelloMessage).
FIRMWARE_HELLO = (
    '{"type":"hello","version":1,"features":{"mcp":true,"glyph_push":false},'
    '"transport":"websocket","audio_params":{"format":"opus","sample_rate":16000,'
    '"channels":1,"frame_duration":60}}'
)
SID = "s1"


def opus_packet(rate_hz: int = 16_000) -> bytes:
    """One real 60 ms Opus packet of a 440 Hz tone, as the firmware's encoder makes them."""
    t = np.arange(rate_hz * 60 // 1000) / rate_hz
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    packets = OpusPacketizer(rate_hz, frame_ms=60, bitrate_bps=24_000).push(pcm)
    assert len(packets) == 1
    return packets[0]


def connected(version: int | None = None) -> XiaozhiConnection:
    connection = XiaozhiConnection(header_version=version)
    hello = (
        FIRMWARE_HELLO
        if version is None
        else FIRMWARE_HELLO.replace('"version":1', f'"version":{version}')
    )
    assert isinstance(connection.receive(hello), Hello)
    return connection


def closed(connection: XiaozhiConnection, data: str | bytes) -> tuple[int, str]:
    with pytest.raises(XiaozhiClosed) as raised:
        connection.receive(data)
    return raised.value.close.code, raised.value.close.reason


def test_the_firmware_hello_is_read() -> None:
    connection = XiaozhiConnection(header_version=1)
    hello = connection.receive(FIRMWARE_HELLO)
    assert hello == Hello(
        version=1,
        audio_params=xiaozhi.AudioParams("opus", 16_000, 1, 60),
        mcp=True,
        aec=False,
    )


def test_the_server_hello_has_what_the_firmware_and_the_sdk_read() -> None:
    message = json.loads(xiaozhi.server_hello("abc"))
    assert message == {
        "type": "hello",
        "transport": "websocket",
        "session_id": "abc",
        "audio_params": {
            "format": "opus",
            "sample_rate": 24000,
            "channels": 1,
            "frame_duration": 60,
        },
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("not json", "malformed hello: not a JSON object"),
        ("[1]", "malformed hello: not a JSON object"),
        (
            '{"type":"listen","state":"start"}',
            "malformed hello: expected hello first, got 'listen'",
        ),
        (
            '{"type":"hello","transport":"mqtt"}',
            "malformed hello: transport 'mqtt' is not websocket",
        ),
        (
            '{"type":"hello","audio_params":{"format":"pcm"}}',
            "malformed hello: audio format 'pcm' is not supported (opus)",
        ),
        (
            '{"type":"hello","audio_params":{"sample_rate":44100}}',
            "malformed hello: sample_rate 44100 is not an Opus rate",
        ),
        ('{"type":"hello","audio_params":[]}', "malformed hello: audio_params must be an object"),
        ('{"type":"hello","version":"2"}', "malformed hello: version must be a number, not '2'"),
    ],
)
def test_a_malformed_hello_closes_4400(data: str, reason: str) -> None:
    assert closed(XiaozhiConnection(), data) == (4400, reason)


def test_audio_before_hello_closes_4400() -> None:
    assert closed(XiaozhiConnection(), opus_packet()) == (4400, "audio before hello")


def test_an_unknown_binary_protocol_version_closes_1003() -> None:
    with pytest.raises(XiaozhiClosed) as raised:
        XiaozhiConnection(header_version=4)
    assert raised.value.close.code == CloseCode.UNSUPPORTED_DATA == 1003
    assert raised.value.close.reason == "binary protocol version 4 is not supported (1, 2, 3)"
    # Without the header, the hello's version decides.
    code, _ = closed(XiaozhiConnection(), FIRMWARE_HELLO.replace('"version":1', '"version":9'))
    assert code == 1003
    with pytest.raises(XiaozhiClosed):
        xiaozhi.parse_version_header("two")
    assert xiaozhi.parse_version_header(" 3 ") == 3 and xiaozhi.parse_version_header(None) is None


def test_opus_that_does_not_decode_closes_1007() -> None:
    code, reason = closed(connected(), b"\xff\xff\xff\xff garbage")
    assert code == 1007 and "Opus" in reason
    assert closed(connected(), b"")[0] == 1007


@pytest.mark.parametrize("version", [1, 2, 3])
def test_uplink_audio_in_each_binary_version(version: int) -> None:
    connection = connected(version)
    packet = opus_packet()
    data = {
        1: packet,
        2: struct.pack(">HHIII", 2, 0, 0, 1234, len(packet)) + packet,
        3: struct.pack(">BBH", 0, 0, len(packet)) + packet,
    }[version]
    audio = connection.receive(data)
    assert isinstance(audio, Audio)
    assert audio.timestamp_ms == (1234 if version == 2 else None)
    assert len(audio.pcm) > 0 and len(audio.pcm) % 2 == 0


@pytest.mark.parametrize(
    ("version", "data", "reason"),
    [
        (2, b"\x00\x02\x00\x00", "bad binary frame: 4 bytes is shorter than the v2 header"),
        (
            2,
            struct.pack(">HHIII", 2, 0, 0, 0, 10) + b"abc",
            "bad binary frame: payload_size 10 but 3 bytes follow",
        ),
        (
            2,
            struct.pack(">HHIII", 3, 0, 0, 0, 1) + b"a",
            "bad binary frame: a v2 header says version 3",
        ),
        (
            2,
            struct.pack(">HHIII", 2, 1, 0, 0, 2) + b"{}",
            "bad binary frame: binary type 1 is not Opus (0)",
        ),
        (3, b"\x00\x00", "bad binary frame: 2 bytes is shorter than the v3 header"),
        (3, b"\x00\x00\x00\x05ab", "bad binary frame: payload_size 5 but 2 bytes follow"),
    ],
)
def test_bad_binary_headers_close_4400(version: int, data: bytes, reason: str) -> None:
    assert closed(connected(version), data) == (4400, reason)


def test_device_messages_after_the_hello() -> None:
    connection = connected()
    sid = '"session_id":"s1",'
    assert connection.receive(
        "{" + sid + '"type":"listen","state":"start","mode":"auto"}'
    ) == Listen(ListenState.START, ListenMode.AUTO)
    assert (
        connection.receive('{"type":"listen","state":"start","mode":"manual"}').mode
        is ListenMode.MANUAL
    )
    assert (
        connection.receive('{"type":"listen","state":"start","mode":"realtime"}').mode
        is ListenMode.REALTIME
    )
    assert connection.receive("{" + sid + '"type":"listen","state":"stop"}') == Listen(
        ListenState.STOP
    )
    assert connection.receive('{"type":"listen","state":"detect","text":"你好小智"}') == Listen(
        ListenState.DETECT, None, "你好小智"
    )
    assert connection.receive('{"type":"abort","reason":"wake_word_detected"}') == Abort(
        "wake_word_detected"
    )
    assert connection.receive('{"type":"abort"}') == Abort()
    assert connection.receive('{"type":"ping"}') == Ping()
    mcp = '{"type":"mcp","payload":{"jsonrpc":"2.0","id":1,"result":{}}}'
    assert connection.receive(mcp) == Mcp({"jsonrpc": "2.0", "id": 1, "result": {}})


@pytest.mark.parametrize(
    "data",
    [
        '{"type":"listen","state":"pause"}',
        '{"type":"listen","state":"start","mode":"push"}',
        '{"type":"mcp","payload":"x"}',
        '{"type":"iot","states":[]}',
        '{"type":"hello"}',
        "nope",
    ],
)
def test_messages_the_server_cannot_use_are_protocol_errors_not_closes(data: str) -> None:
    with pytest.raises(ProtocolError):
        connected().receive(data)


def _audio(turn_id: int, ms: int, *, index: int = 0, start: bool = True) -> ReplyAudio:
    pcm = (np.ones(24 * ms) * 1000).astype("<i2").tobytes()
    return ReplyAudio(turn_id, index, "Sure thing.", start, pcm, 24_000)


def _done(turn_id: int, *, interrupted: bool = False) -> TurnDone:
    return TurnDone(turn_id, "hi", "Sure thing.", interrupted, TurnTimings())


def test_a_reply_goes_out_as_stt_tts_start_llm_sentence_audio_stop() -> None:
    encoder = XiaozhiEncoder(SID, 1)
    out = [
        o
        for e in (
            Transcript("what time is it", final=True),
            ReplyStarted(1),
            ReplyTextDelta(1, "Sure"),
            _audio(1, 150),
            _done(1),
        )
        for o in encoder.encode(e)
    ]
    texts = [json.loads(o.data) for o in out if isinstance(o.data, str)]
    assert texts == [
        {"session_id": SID, "type": "stt", "text": "what time is it"},
        {"session_id": SID, "type": "tts", "state": "start"},
        {"session_id": SID, "type": "llm", "text": "🙂", "emotion": "happy"},
        {"session_id": SID, "type": "tts", "state": "sentence_start", "text": "Sure thing."},
        {"session_id": SID, "type": "tts", "state": "stop"},
    ]
    audio = [o for o in out if isinstance(o.data, bytes)]
    assert len(audio) == 3  # 150 ms: two 60 ms frames, and the rest padded at the end
    assert all(o.audio_ms == 60 and o.turn_id == 1 for o in audio)
    decoder = OpusDecoder(24_000)
    assert sum(len(decoder.decode(o.data)) for o in audio) // 2 >= 2 * 1440
    assert isinstance(out[-1].data, str) and out[-1].turn_id is None


@pytest.mark.parametrize("version", [2, 3])
def test_downlink_audio_is_framed_in_the_connections_version(version: int) -> None:
    encoder = XiaozhiEncoder(SID, version)
    encoder.encode(ReplyStarted(1))
    (packet,) = [o.data for o in encoder.encode(_audio(1, 60)) if isinstance(o.data, bytes)]
    if version == 2:
        v, kind, _, _, size = struct.unpack_from(">HHIII", packet)
        assert (v, kind, size) == (2, 0, len(packet) - 16)
    else:
        kind, _, size = struct.unpack_from(">BBH", packet)
        assert (kind, size) == (0, len(packet) - 4)


def test_an_interrupted_reply_stops_at_once_with_one_tts_stop() -> None:
    encoder = XiaozhiEncoder(SID, 1)
    encoder.encode(ReplyStarted(4))
    encoder.encode(_audio(4, 90))  # 30 ms wait in the packetizer
    stop = encoder.encode(Interrupted(4, "Sure"))
    assert [json.loads(o.data)["state"] for o in stop] == ["stop"]  # type: ignore[arg-type]
    assert encoder.encode(_done(4, interrupted=True)) == []  # no second stop, no padded frame
    assert encoder.encode(_audio(4, 60)) == []  # late audio of that reply goes nowhere


def test_errors_before_a_reply_are_alerts_silence_is_not() -> None:
    encoder = XiaozhiEncoder(SID, 1)
    assert encoder.encode(ErrorEvent(ErrorCode.NO_SPEECH, "heard nothing")) == []
    (alert,) = encoder.encode(ErrorEvent(ErrorCode.RATE_LIMITED, "too many turns"))
    assert json.loads(alert.data) == {  # type: ignore[arg-type]
        "session_id": SID,
        "type": "alert",
        "status": "error",
        "message": "too many turns",
        "emotion": "sad",
    }


def test_emotions() -> None:
    assert emotion_for("Sorry, I can't do that.") == "sad"
    assert emotion_for("It is three o'clock.") == "neutral"
    assert emotion_for("Hmm, maybe.") == "thinking"


def test_the_close_table() -> None:
    codes = {ending: xiaozhi.close_for(ending, "d").code for ending in Ending}
    assert codes == {
        Ending.CLIENT_ENDED: 1000,
        Ending.ASSISTANT_ENDED: 1000,
        Ending.SERVER_SHUTDOWN: 1001,
        Ending.SHUTTING_DOWN: 1013,
        Ending.UNAUTHORIZED: 4401,
        Ending.RATE_LIMITED: 4429,
        Ending.UNAVAILABLE: 1013,
        Ending.BAD_REQUEST: 4400,
        Ending.TIMEOUT: 4408,
        Ending.TOO_LARGE: 1009,
        Ending.SLOW_CLIENT: 1008,
        Ending.INTERNAL: 1011,
    }


# -- MCP ---------------------------------------------------------------------------------------

# The firmware's replies (mcp_server.cc), trimmed to two tools and one user-only tool.
TOOLS_PAGE_1 = {
    "jsonrpc": "2.0",
    "id": 2,
    "result": {
        "tools": [
            {
                "name": "self.get_device_status",
                "description": "Provides the real-time information of the device",
                "inputSchema": {"type": "object", "properties": {}},
            },
            {
                "name": "self.reboot",
                "description": "Reboot",
                "inputSchema": {"type": "object", "properties": {}},
                "annotations": {"audience": ["user"]},
            },
        ],
        "nextCursor": "self.audio_speaker.set_volume",
    },
}
TOOLS_PAGE_2 = {
    "jsonrpc": "2.0",
    "id": 3,
    "result": {
        "tools": [
            {
                "name": "self.audio_speaker.set_volume",
                "description": "Set the volume of the audio speaker.",
                "inputSchema": {
                    "type": "object",
                    "properties": {"volume": {"type": "integer", "minimum": 0, "maximum": 100}},
                    "required": ["volume"],
                },
            }
        ]
    },
}


def test_mcp_initialize_list_in_pages_and_call() -> None:
    client = McpClient()
    init = client.initialize()
    assert init == {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2024-11-05",
            "capabilities": {"vision": {"url": "", "token": ""}},
            "clientInfo": {"name": "voxgate", "version": "1"},
        },
    }
    step = client.receive(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "result": {"protocolVersion": "2024-11-05", "capabilities": {"tools": {}}},
        }
    )
    assert step.send == [
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"cursor": ""}},
    ]
    step = client.receive(TOOLS_PAGE_1)
    assert step.send == [
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/list",
            "params": {"cursor": "self.audio_speaker.set_volume"},
        }
    ]
    assert not step.tools_ready
    step = client.receive(TOOLS_PAGE_2)
    assert step.tools_ready and client.ready
    assert [t.llm_name for t in client.tools] == [
        "self_get_device_status",
        "self_audio_speaker_set_volume",
    ]
    tool = client.tool_named("self_audio_speaker_set_volume")
    assert tool is not None and tool.input_schema["required"] == ["volume"]
    request_id, call = client.call(tool, {"volume": 30})
    assert call == {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "self.audio_speaker.set_volume", "arguments": {"volume": 30}},
    }
    ok = client.receive(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "result": {"content": [{"type": "text", "text": "true"}], "isError": False},
        }
    )
    assert ok.result == xiaozhi_mcp_result(request_id, "true", False)
    _, again = client.call(tool, {"volume": 500})
    failed = client.receive(
        {"jsonrpc": "2.0", "id": again["id"], "error": {"message": "Invalid volume"}}
    )
    assert failed.result == xiaozhi_mcp_result(again["id"], "Invalid volume", True)


def xiaozhi_mcp_result(request_id: int, text: str, is_error: bool) -> object:
    from voxgate.protocols.xiaozhi_mcp import CallResult

    return CallResult(request_id, text, is_error)


def test_mcp_ignores_what_answers_nothing_and_survives_a_failed_list() -> None:
    client = McpClient()
    client.initialize()
    assert client.receive({"jsonrpc": "2.0", "id": "1", "result": {}}).send == []  # string id
    assert client.receive({"jsonrpc": "2.0", "id": 99, "result": {}}).send == []
    assert client.receive({"jsonrpc": "2.0", "method": "notifications/x"}).send == []
    step = client.receive({"jsonrpc": "2.0", "id": 1, "error": {"message": "no"}})
    assert step.tools_ready and client.tools == []


def _listed_client() -> McpClient:
    """A client whose ``tools/list`` (id 2) is the next request answered."""
    client = McpClient()
    client.initialize()
    client.receive({"jsonrpc": "2.0", "id": 1, "result": {"capabilities": {"tools": {}}}})
    return client


def test_mcp_asks_a_device_that_keeps_paging_for_ten_pages_at_most() -> None:
    client = _listed_client()
    asked = []
    request_id = 2
    for page in range(1, 100):
        step = client.receive(
            {
                "jsonrpc": "2.0",
                "id": request_id,
                "result": {
                    "tools": [{"name": f"self.t{page}", "inputSchema": {"type": "object"}}],
                    "nextCursor": "again",
                },
            }
        )
        if not step.send:
            break
        assert step.send == [
            {
                "jsonrpc": "2.0",
                "id": request_id + 1,
                "method": "tools/list",
                "params": {"cursor": "again"},
            }
        ]
        asked.append(page)
        request_id += 1
    assert asked == list(range(1, 10))  # the tenth page is the last
    assert step.tools_ready and step.cut_short and step.dropped == [] and client.ready
    assert [t.name for t in client.tools] == [f"self.t{page}" for page in range(1, 11)]


def test_mcp_keeps_64_tools_says_which_it_dropped_and_lists_each_name_once() -> None:
    client = _listed_client()
    names = ["self.a", "self.a", "self_a"] + [f"self.t{n}" for n in range(70)]
    page = {
        "jsonrpc": "2.0",
        "id": 2,
        "result": {"tools": [{"name": name} for name in names], "nextCursor": "more"},
    }
    step = client.receive(page)
    # self.a once (self_a is the same name to the LLM), then 63 more; the device is not asked
    # for further pages once the list is full.
    assert [t.name for t in client.tools] == ["self.a"] + [f"self.t{n}" for n in range(63)]
    assert step.dropped == [f"self.t{n}" for n in range(63, 70)]
    assert step.send == [] and step.tools_ready and step.cut_short
    assert client.tool_named("self_a") is client.tool_named("self.a") is client.tools[0]
    assert client.tool_named("self_t69") is None


def test_mcp_forgets_a_call_that_timed_out() -> None:
    client = _listed_client()
    client.receive({"jsonrpc": "2.0", "id": 2, "result": {"tools": [{"name": "self.light"}]}})
    tool = client.tool_named("self.light")
    assert tool is not None
    request_id, _ = client.call(tool, {})
    client.forget(request_id)
    late = {"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"text": "on"}]}}
    assert client.receive(late).result is None  # the answer after the timeout is ignored
    kept, _ = client.call(tool, {})
    client.forget(request_id + 99)  # an id never sent: nothing happens
    answer = {"jsonrpc": "2.0", "id": kept, "result": {"content": [{"text": "on"}]}}
    assert client.receive(answer).result == xiaozhi_mcp_result(kept, "on", False)
