"""The Wyoming codec on literal bytes: framing, limits, and the server's request rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from voxgate.core.errors import ErrorCode
from voxgate.protocols import wyoming
from voxgate.protocols.wyoming import WyomingDecoder, WyomingLimits, WyomingProtocolError
from voxgate.protocols.wyoming_requests import (
    AudioBegun,
    AudioData,
    AudioEnded,
    Describe,
    Ping,
    RequestLimits,
    SynthesisBegun,
    SynthesisEnded,
    SynthesisText,
    Synthesize,
    WyomingServerProtocol,
)

# -- framing ------------------------------------------------------------------------------------


def test_a_header_line_alone_is_an_event() -> None:
    events = WyomingDecoder().receive_data(b'{"type": "describe"}\n')
    assert [(e.type, dict(e.data), e.payload) for e in events] == [("describe", {}, b"")]


def test_data_block_is_merged_over_the_header_data_and_payload_follows() -> None:
    wire = (
        b'{"type": "audio-chunk", "data": {"rate": 8000, "width": 2}, '
        b'"data_length": 29, "payload_length": 4, "version": "1.10.2"}\n'
        b'{"rate": 16000, "channels": 1}'
        b"\x01\x00\x02\x00"
    )
    assert len(b'{"rate": 16000, "channels": 1}') == 30  # one more than announced: see below
    decoder = WyomingDecoder()
    # 29 bytes of data would cut the JSON: the announced lengths are what count.
    with pytest.raises(WyomingProtocolError, match="data block is not JSON"):
        decoder.receive_data(wire)
    good = wire.replace(b'"data_length": 29', b'"data_length": 30')
    [event] = WyomingDecoder().receive_data(good)
    assert event.type == "audio-chunk"
    assert dict(event.data) == {"rate": 16000, "width": 2, "channels": 1}
    assert event.payload == b"\x01\x00\x02\x00"


def test_events_split_anywhere_come_out_whole_and_in_order() -> None:
    wire = (
        wyoming.encode("transcribe", {"language": "en"})
        + wyoming.encode("audio-chunk", {"rate": 16000, "width": 2, "channels": 1}, b"\x00\x01" * 5)
        + b'{"type": "audio-stop"}\n'
    )
    decoder = WyomingDecoder()
    events = []
    for byte in wire:  # one byte at a time: the worst a TCP stream can do
        events += decoder.receive_data(bytes([byte]))
    assert [e.type for e in events] == ["transcribe", "audio-chunk", "audio-stop"]
    assert events[1].payload == b"\x00\x01" * 5
    assert not decoder.mid_event
    decoder.receive_eof()


def test_encode_writes_what_the_reference_reads() -> None:
    wire = wyoming.encode("audio-chunk", {"rate": 22050, "width": 2, "channels": 1}, b"\x01\x02")
    line, rest = wire.split(b"\n", 1)
    header = json.loads(line)
    assert header == {
        "type": "audio-chunk",
        "version": wyoming.VERSION,
        "data_length": header["data_length"],
        "payload_length": 2,
    }
    assert json.loads(rest[: header["data_length"]]) == {"rate": 22050, "width": 2, "channels": 1}
    assert rest[header["data_length"] :] == b"\x01\x02"
    assert wyoming.encode("audio-stop") == b'{"type": "audio-stop", "version": "1.10.2"}\n'


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"GET / HTTP/1.1\r\n", "header line is not JSON"),
        (b"\xff\xfe\n", "header line is not JSON"),
        (b"[1, 2]\n", "header line is not a JSON object"),
        (b'{"data": {}}\n', 'no "type"'),
        (b'{"type": ""}\n', 'no "type"'),
        (b'{"type": "x", "payload_length": -1}\n', "whole number"),
        (b'{"type": "x", "payload_length": 1.5}\n', "whole number"),
        (b'{"type": "x", "payload_length": "10"}\n', "whole number"),
        (b'{"type": "x", "data_length": true}\n', "whole number"),
        (b'{"type": "x", "data": [1]}\n', "header's data is not a JSON object"),
        (b'{"type": "x", "data_length": 2}\n[]', "data block is not a JSON object"),
    ],
)
def test_garbage_and_wrong_lengths_are_refused(wire: bytes, message: str) -> None:
    with pytest.raises(WyomingProtocolError, match=message) as raised:
        WyomingDecoder().receive_data(wire)
    assert raised.value.code == ErrorCode.BAD_REQUEST


def test_a_huge_payload_length_is_refused_on_the_header_before_any_payload() -> None:
    decoder = WyomingDecoder(WyomingLimits(max_payload_bytes=1024))
    with pytest.raises(WyomingProtocolError, match="payload_length 1000000000000 exceeds 1024"):
        decoder.receive_data(b'{"type": "audio-chunk", "payload_length": 1000000000000}\n')
    assert decoder.bytes_received < 100


def test_a_huge_data_length_is_refused_too() -> None:
    decoder = WyomingDecoder(WyomingLimits(max_data_bytes=100))
    with pytest.raises(WyomingProtocolError, match="data_length 101 exceeds 100") as raised:
        decoder.receive_data(b'{"type": "x", "data_length": 101}\n')
    assert raised.value.code == ErrorCode.MESSAGE_TOO_LARGE


def test_a_header_line_without_end_is_refused_at_the_limit() -> None:
    decoder = WyomingDecoder(WyomingLimits(max_header_bytes=64))
    assert decoder.receive_data(b'{"type": "' + b"a" * 40) == []
    with pytest.raises(WyomingProtocolError, match="header line longer than 64") as raised:
        decoder.receive_data(b"a" * 30)
    assert raised.value.code == ErrorCode.MESSAGE_TOO_LARGE


def test_eof_inside_an_event_is_an_error() -> None:
    decoder = WyomingDecoder()
    decoder.receive_data(b'{"type": "audio-chunk", "payload_length": 4}\n\x00\x00')
    assert decoder.mid_event
    with pytest.raises(WyomingProtocolError, match="middle of an event"):
        decoder.receive_eof()


def test_info_has_what_home_assistant_reads() -> None:
    wire = wyoming.info(
        asr=[wyoming.Program("stt", "speech", [wyoming.Artifact("m", ["en"])], streaming=True)],
        tts=[wyoming.Program("tts", "voice", [wyoming.Artifact("v", ["en", "de"])])],
    )
    [event] = WyomingDecoder().receive_data(wire)
    assert event.type == "info"
    asr, tts = event.data["asr"][0], event.data["tts"][0]
    assert asr["installed"] and tts["installed"]
    assert asr["supports_transcript_streaming"] is True
    assert tts["supports_synthesize_streaming"] is False
    assert asr["models"][0]["languages"] == ["en"]
    assert tts["voices"][0]["languages"] == ["en", "de"]
    assert asr["attribution"]["name"] == "voxgate"


# -- the server's request rules -----------------------------------------------------------------

FORMAT = {"rate": 16000, "width": 2, "channels": 1}


def feed(protocol: WyomingServerProtocol, *wire: bytes) -> list[object]:
    return list(protocol.receive_data(b"".join(wire)))


def test_transcribe_then_audio_is_one_utterance() -> None:
    protocol = WyomingServerProtocol()
    requests = feed(
        protocol,
        wyoming.encode("transcribe", {"language": "de"}),
        wyoming.encode("audio-start", FORMAT),
        wyoming.encode("audio-chunk", {**FORMAT, "timestamp": 20}, b"\x01\x00\xff\xff"),
        wyoming.encode("audio-stop"),
    )
    begun, data, ended = requests
    assert begun == AudioBegun("transcribe", 16000, "de", None)
    assert isinstance(data, AudioData)
    assert data.samples.tolist() == [1, -1] and data.timestamp_ms == 20
    assert ended == AudioEnded("transcribe")


def test_audio_without_a_request_is_transcribed_and_stereo_is_mixed_down() -> None:
    protocol = WyomingServerProtocol()
    stereo = {"rate": 8000, "width": 2, "channels": 2}
    pcm = np.array([100, 300, -50, -150], dtype="<i2").tobytes()
    begun, data = feed(
        protocol, wyoming.encode("audio-start", stereo), wyoming.encode("audio-chunk", stereo, pcm)
    )
    assert begun == AudioBegun("transcribe", 8000, None, None)
    assert isinstance(data, AudioData) and data.samples.tolist() == [200, -100]


def test_detect_names_the_audio_for_the_wake_word_engine() -> None:
    protocol = WyomingServerProtocol()
    begun, _ = feed(
        protocol,
        wyoming.encode("detect", {"names": ["ok_nabu"]}),
        wyoming.encode("audio-start", FORMAT),
        wyoming.encode("audio-stop"),
    )
    assert begun == AudioBegun("detect", 16000, None, ("ok_nabu",))


def test_describe_ping_and_unknown_events() -> None:
    protocol = WyomingServerProtocol()
    requests = feed(
        protocol,
        wyoming.encode("describe"),
        wyoming.encode("select-program", {"name": "x"}),
        wyoming.encode("ping", {"text": "hi"}),
    )
    assert requests == [Describe(), Ping("hi")]
    assert protocol.ignored == ["select-program"]


def test_streamed_synthesis_drops_the_compatibility_copy() -> None:
    protocol = WyomingServerProtocol()
    requests = feed(
        protocol,
        wyoming.encode("synthesize-start", {"voice": {"name": "joe", "speaker": "1"}}),
        wyoming.encode("synthesize-chunk", {"text": "Hello. "}),
        wyoming.encode("synthesize", {"text": "Hello. World."}),
        wyoming.encode("synthesize-chunk", {"text": "World."}),
        wyoming.encode("synthesize-stop"),
        wyoming.encode("synthesize", {"text": "Again.", "voice": {"language": "en"}}),
    )
    assert requests == [
        SynthesisBegun("joe", "1"),
        SynthesisText("Hello. "),
        SynthesisText("World."),
        SynthesisEnded(),
        Synthesize("Again.", None, None),
    ]


@pytest.mark.parametrize(
    ("wire", "message", "code"),
    [
        ([wyoming.encode("audio-chunk", FORMAT, b"\x00\x00")], "before audio-start", "bad_request"),
        ([wyoming.encode("audio-stop")], "audio-stop before audio-start", "bad_request"),
        (
            [wyoming.encode("audio-start", FORMAT), wyoming.encode("audio-start", FORMAT)],
            "already open",
            "bad_request",
        ),
        (
            [wyoming.encode("audio-start", FORMAT), wyoming.encode("transcribe")],
            "still open",
            "bad_request",
        ),
        (
            [
                wyoming.encode("audio-start", FORMAT),
                wyoming.encode("audio-chunk", FORMAT, b"\x00\x00\x00"),
            ],
            "not whole 2-byte frames",
            "bad_audio",
        ),
        (
            [
                wyoming.encode("audio-start", FORMAT),
                wyoming.encode("audio-chunk", {**FORMAT, "rate": 44100}, b"\x00\x00"),
            ],
            "another format",
            "bad_audio",
        ),
        ([wyoming.encode("audio-start", {**FORMAT, "width": 4})], "width must be 2", "bad_audio"),
        ([wyoming.encode("audio-start", {**FORMAT, "rate": 100})], "rate must be", "bad_audio"),
        ([wyoming.encode("audio-start", {**FORMAT, "channels": 0})], "channels", "bad_audio"),
        ([wyoming.encode("audio-start", {"rate": "16000"})], "rate must be", "bad_audio"),
        ([wyoming.encode("synthesize", {"text": 5})], '"text" must be a string', "bad_request"),
        ([wyoming.encode("synthesize", {"voice": {}})], '"text" must be', "bad_request"),
        (
            [wyoming.encode("synthesize-chunk", {"text": "x"})],
            "before synthesize-start",
            "bad_request",
        ),
        (
            [wyoming.encode("synthesize", {"text": "x", "voice": "joe"})],
            '"voice" must be an object',
            "bad_request",
        ),
        ([wyoming.encode("detect", {"names": "ok"})], "list of strings", "bad_request"),
    ],
)
def test_requests_out_of_order_or_malformed_are_refused(
    wire: list[bytes], message: str, code: str
) -> None:
    with pytest.raises(WyomingProtocolError, match=message) as raised:
        feed(WyomingServerProtocol(), *wire)
    assert raised.value.code.value == code


def test_a_synthesize_stop_outside_a_stream_is_answered_not_refused() -> None:
    protocol = WyomingServerProtocol()
    requests = feed(
        protocol,
        wyoming.encode("synthesize", {"text": "Hi."}),
        wyoming.encode("synthesize-stop"),
    )
    assert requests == [Synthesize("Hi.", None, None), SynthesisEnded()]


def test_too_much_audio_or_text_is_refused() -> None:
    protocol = WyomingServerProtocol(requests=RequestLimits(max_audio_s=1.0, max_text_chars=10))
    second = b"\x00\x00" * 8000
    feed(protocol, wyoming.encode("audio-start", {**FORMAT, "rate": 8000}))
    feed(protocol, wyoming.encode("audio-chunk", {**FORMAT, "rate": 8000}, second))
    with pytest.raises(WyomingProtocolError, match="more than 1 s of audio") as raised:
        feed(protocol, wyoming.encode("audio-chunk", {**FORMAT, "rate": 8000}, b"\x00\x00"))
    assert raised.value.code == ErrorCode.MESSAGE_TOO_LARGE
    # A detect is not capped: it streams until the wake word, which may take hours.
    detect = WyomingServerProtocol(requests=RequestLimits(max_audio_s=1.0))
    feed(detect, wyoming.encode("detect"), wyoming.encode("audio-start", {**FORMAT, "rate": 8000}))
    for _ in range(3):
        feed(detect, wyoming.encode("audio-chunk", {**FORMAT, "rate": 8000}, second))
    texts = WyomingServerProtocol(requests=RequestLimits(max_text_chars=10))
    feed(
        texts,
        wyoming.encode("synthesize-start"),
        wyoming.encode("synthesize-chunk", {"text": "12345"}),
    )
    with pytest.raises(WyomingProtocolError, match="more than 10 characters"):
        feed(texts, wyoming.encode("synthesize-chunk", {"text": "123456"}))
