"""The relay codec on literals: client JSON in, typed events out; turn-engine events in, frames out."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.core.errors import ErrorCode, ProtocolError
from voxgate.core.events import (
    ErrorEvent,
    Event,
    Interrupted,
    ReplyAudio,
    ReplyStarted,
    ReplyTextDelta,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    TurnDone,
    TurnTimings,
    WakeWordHeard,
    WakeWordWaiting,
)
from voxgate.core.listening import FollowUp, ListeningMode
from voxgate.protocols.relay import (
    PROTOCOL_VERSION,
    AudioFrame,
    CharacterOverrides,
    InputCommit,
    Listening,
    PlaybackPosition,
    Ready,
    RelayDecoder,
    RelayEncoder,
    RelaySequencer,
    ReplyInterrupt,
    SessionEnd,
    SessionStart,
    TextInput,
    TurnDetection,
    error_message,
    ready_message,
    session_end_message,
)

MAX = 4096


def decode(text: str, decoder: RelayDecoder | None = None) -> Any:
    return (decoder or RelayDecoder(MAX)).receive_text(text).event


def protocol_error(text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        decode(text)
    return caught.value


# -- uplink ----------------------------------------------------------------------------------


def test_session_start_with_every_field() -> None:
    text = (
        '{"event":"session.start","seq":1,"payload":{"token":"abc",'
        '"input":{"audio_format":"pcm16","sample_rate_hz":8000,"channels":1},'
        '"output":{"sample_rate_hz":16000},"turn_detection":"client","partial_transcripts":true,'
        '"character":{"id":"toy","name":"Ada","system_prompt":"Be brief.","first_message":"Hi!"},'
        '"greeting":false,"resume_session_id":"s-1"}}'
    )
    assert decode(text) == SessionStart(
        token="abc",
        input_rate_hz=8000,
        output_rate_hz=16000,
        turn_detection=TurnDetection.CLIENT,
        partial_transcripts=True,
        character=CharacterOverrides("toy", "Ada", "Be brief.", "Hi!"),
        greeting=False,
        resume_session_id="s-1",
    )


def test_session_start_defaults_without_a_payload() -> None:
    start = decode('{"event":"session.start","seq":1}')
    assert start == SessionStart()
    assert (start.input_rate_hz, start.output_rate_hz) == (16_000, 24_000)
    assert start.turn_detection is TurnDetection.SERVER_VAD and start.greeting


@pytest.mark.parametrize(
    ("text", "event"),
    [
        ('{"event":"input.commit","seq":1,"payload":{}}', InputCommit()),
        ('{"event":"reply.interrupt","seq":1}', ReplyInterrupt()),
        ('{"event":"text.input","seq":1,"payload":{"text":"hello"}}', TextInput("hello")),
        (
            '{"event":"playback.position","seq":1,"payload":{"turn_id":3,"played_ms":1250}}',
            PlaybackPosition(3, 1250.0),
        ),
        ('{"event":"session.end","seq":1,"payload":{}}', SessionEnd()),
    ],
)
def test_client_events(text: str, event: object) -> None:
    assert decode(text) == event


def test_binary_frames_are_audio_and_not_numbered() -> None:
    received = RelayDecoder(MAX).receive_bytes(b"\x01\x00\x02")
    assert received.event == AudioFrame(b"\x01\x00\x02") and received.seq is None


def test_seq_gaps_are_reported_and_numbering_follows_the_client() -> None:
    decoder = RelayDecoder(MAX)
    first = decoder.receive_text('{"event":"input.commit","seq":1}')
    skipped = decoder.receive_text('{"event":"input.commit","seq":3}')
    after = decoder.receive_text('{"event":"input.commit","seq":4}')
    repeated = decoder.receive_text('{"event":"input.commit","seq":4}')
    assert first.expected_seq is None and after.expected_seq is None
    assert (skipped.seq, skipped.expected_seq) == (3, 2)
    assert (repeated.seq, repeated.expected_seq) == (4, 5)


def test_an_unknown_event_still_counts_in_the_numbering() -> None:
    decoder = RelayDecoder(MAX)
    with pytest.raises(ProtocolError) as caught:
        decoder.receive_text('{"event":"dance","seq":1,"payload":{}}')
    assert caught.value.code == ErrorCode.UNKNOWN_EVENT and "dance" in str(caught.value)
    assert decoder.receive_text('{"event":"input.commit","seq":2}').expected_seq is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "JSON"),
        ("[1, 2]", "object"),
        ('{"seq":1}', "event"),
        ('{"event":"input.commit"}', "seq"),
        ('{"event":"input.commit","seq":true}', "seq"),
        ('{"event":"input.commit","seq":-1}', "seq"),
        ('{"event":"input.commit","seq":1.5}', "seq"),
        ('{"event":"input.commit","seq":1,"payload":[]}', "payload"),
        ('{"event":"text.input","seq":1,"payload":{"text":"  "}}', "text"),
        ('{"event":"text.input","seq":1,"payload":{"text":5}}', "text"),
        ('{"event":"text.input","seq":1,"payload":{"text":"hi \\ud800"}}', "Unicode"),
        ('{"event":"text.input","seq":1,"payload":{"text":"' + "a" * 2001 + '"}}', "text"),
        ('{"event":"playback.position","seq":1,"payload":{"played_ms":5}}', "turn_id"),
        ('{"event":"playback.position","seq":1,"payload":{"turn_id":1,"played_ms":NaN}}', "played_ms"),
        ('{"event":"playback.position","seq":1,"payload":{"turn_id":1,"played_ms":-1}}', "played_ms"),
        ('{"event":"playback.position","seq":1,"payload":{"turn_id":1,"played_ms":true}}', "played_ms"),
        ('{"event":"session.start","seq":1,"payload":{"input":{"sample_rate_hz":7999}}}', "sample_rate_hz"),
        ('{"event":"session.start","seq":1,"payload":{"output":{"sample_rate_hz":"24k"}}}', "sample_rate_hz"),
        ('{"event":"session.start","seq":1,"payload":{"input":{"channels":2}}}', "channels"),
        ('{"event":"session.start","seq":1,"payload":{"input":{"audio_format":"opus"}}}', "planned"),
        ('{"event":"session.start","seq":1,"payload":{"output":{"audio_format":"mp3"}}}', "audio_format"),
        ('{"event":"session.start","seq":1,"payload":{"turn_detection":"psychic"}}', "turn_detection"),
        ('{"event":"session.start","seq":1,"payload":{"greeting":"yes"}}', "greeting"),
        ('{"event":"session.start","seq":1,"payload":{"character":"Ada"}}', "character"),
        ('{"event":"session.start","seq":1,"payload":{"character":{"name":7}}}', "name"),
        ('{"event":"session.start","seq":1,"payload":{"token":["x"]}}', "token"),
    ],
)  # fmt: skip
def test_malformed_messages_are_bad_requests_naming_the_problem(text: str, needle: str) -> None:
    error = protocol_error(text)
    assert error.code == ErrorCode.BAD_REQUEST
    assert needle in str(error)


def test_deeply_nested_json_is_a_bad_request_not_a_crash() -> None:
    assert protocol_error("[" * 2000 + "]" * 2000).code == ErrorCode.BAD_REQUEST


def test_oversize_messages_are_measured_in_bytes() -> None:
    decoder = RelayDecoder(1024)
    with pytest.raises(ProtocolError) as caught:
        decoder.receive_bytes(bytes(1025))
    assert caught.value.code == ErrorCode.MESSAGE_TOO_LARGE
    # 600 characters, 1200 bytes of UTF-8.
    text = '{"event":"text.input","seq":1,"payload":{"text":"' + "é" * 600 + '"}}'
    with pytest.raises(ProtocolError) as caught:
        decoder.receive_text(text)
    assert caught.value.code == ErrorCode.MESSAGE_TOO_LARGE
    assert decoder.receive_bytes(bytes(1024)).event == AudioFrame(bytes(1024))


# -- downlink --------------------------------------------------------------------------------


def wire(events: list[Event]) -> list[str | bytes]:
    encoder, sequencer = RelayEncoder(), RelaySequencer()
    return [
        frame for e in events for out in encoder.encode(e) for frame in sequencer.frames(out.data)
    ]


def test_text_events_on_the_wire() -> None:
    frames = wire(
        [
            SpeechStarted(at_ms=256.0),
            SpeechStopped(at_ms=1824.0),
            Transcript("what is it", final=False),
            Transcript("what is it?", final=True),
            ReplyStarted(1),
            ReplyTextDelta(1, " Paris"),
            Interrupted(1, "Par"),
            ErrorEvent(ErrorCode.NO_SPEECH, "heard nothing", turn_id=2),
        ]
    )
    assert frames == [
        '{"event":"speech.started","seq":1,"payload":{"at_ms":256.0}}',
        '{"event":"speech.stopped","seq":2,"payload":{"at_ms":1824.0}}',
        '{"event":"asr.partial","seq":3,"payload":{"text":"what is it"}}',
        '{"event":"asr.final","seq":4,"payload":{"text":"what is it?"}}',
        '{"event":"reply.started","seq":5,"payload":{"turn_id":1}}',
        '{"event":"llm.token","seq":6,"payload":{"turn_id":1,"text":" Paris"}}',
        '{"event":"reply.interrupted","seq":7,"payload":{"turn_id":1,"heard_text":"Par"}}',
        '{"event":"error","seq":8,"payload":{"code":"no_speech","message":"heard nothing",'
        f'"turn_id":2,"fatal":false,"protocol_version":"{PROTOCOL_VERSION}"}}}}',
    ]


def test_reply_audio_is_one_outbound_frame_that_goes_out_as_header_then_binary() -> None:
    pcm = b"\x10\x00" * 480  # 20 ms at 24 kHz
    event = ReplyAudio(2, 1, "Hi there.", True, pcm, 24_000)
    (out,) = RelayEncoder().encode(event)
    assert (out.turn_id, out.audio_ms) == (2, pytest.approx(20.0))
    sequencer = RelaySequencer()
    sequencer.frames(error_message(ErrorCode.BAD_REQUEST, "x"))  # seq 1
    header, audio = sequencer.frames(out.data)
    assert header == (
        '{"event":"tts.audio","seq":2,"payload":{"turn_id":2,"sentence_index":1,'
        '"sentence_text":"Hi there.","sentence_start":true,"audio_format":"pcm16",'
        '"sample_rate_hz":24000,"bytes":960,"duration_ms":20.0}}'
    )
    assert audio == pcm
    assert sequencer.frames(session_end_message("client")) == [
        '{"event":"session.end","seq":3,"payload":{"reason":"client"}}'
    ]


def test_what_the_pump_may_drop_after_a_barge_in() -> None:
    """Reply text and audio carry their turn (dropped once it is interrupted); the notices
    that the reply ended do not, so they always arrive."""
    encoder = RelayEncoder()
    done = TurnDone(1, "q", "a", True, TurnTimings(stt_ms=12.5))
    turn_ids = {
        type(event).__name__: encoder.encode(event)[0].turn_id
        for event in (
            ReplyStarted(1),
            ReplyTextDelta(1, "a"),
            ReplyAudio(1, 0, "a", True, b"\0\0", 16_000),
            Interrupted(1, ""),
            done,
        )
    }
    assert turn_ids == {
        "ReplyStarted": 1,
        "ReplyTextDelta": 1,
        "ReplyAudio": 1,
        "Interrupted": None,
        "TurnDone": None,
    }
    (frame,) = RelaySequencer().frames(encoder.encode(done)[0].data)
    payload = json.loads(frame)["payload"]
    assert payload["interrupted"] is True and payload["turn_id"] == 1
    assert payload["timings"] == {
        "end_of_turn_wait_ms": None,
        "stt_ms": 12.5,
        "llm_first_token_ms": None,
        "first_sentence_ms": None,
        "tts_first_audio_ms": None,
        "speech_end_to_first_audio_ms": None,
        "turn_end_to_first_audio_ms": None,
        "speculative": False,
    }


def test_turn_done_of_a_reply_cut_while_playing_waits_for_reply_interrupted() -> None:
    """The engine finished the reply (TurnDone queued) before the user cut it short."""
    interrupted = {1}
    encoder, sequencer = RelayEncoder(interrupted.__contains__), RelaySequencer()
    timings = TurnTimings()
    done = TurnDone(1, "q", "One. Two.", False, timings)
    assert encoder.encode(done) == []
    frames = [
        frame
        for event in (Interrupted(1, "One."), TurnDone(2, "r", "Yes.", False, timings))
        for out in encoder.encode(event)
        for frame in sequencer.frames(out.data)
    ]
    messages = [json.loads(frame) for frame in frames]
    assert [(m["event"], m["seq"]) for m in messages] == [
        ("reply.interrupted", 1),
        ("turn.done", 2),
        ("turn.done", 3),
    ]
    assert messages[1]["payload"]["reply_text"] == "One."
    assert messages[1]["payload"]["interrupted"] is True
    assert messages[2]["payload"]["reply_text"] == "Yes."


def test_session_ready_states_the_version_and_what_was_negotiated() -> None:
    ready = Ready(
        session_id="abc",
        device="kitchen",
        input_rate_hz=16_000,
        output_rate_hz=24_000,
        turn_detection=TurnDetection.CLIENT,
        partial_transcripts=False,
        barge_in=True,
        character_name="Vox",
        greeting=True,
        resumed_turns=None,
        max_message_bytes=1024,
    )
    (frame,) = RelaySequencer().frames(ready_message(ready))
    assert frame == (
        '{"event":"session.ready","seq":1,"payload":{"protocol_version":"1.1","session_id":"abc",'
        '"device":"kitchen","input":{"audio_format":"pcm16","sample_rate_hz":16000,"channels":1},'
        '"output":{"audio_format":"pcm16","sample_rate_hz":24000,"channels":1},'
        '"turn_detection":"client","partial_transcripts":false,"barge_in":true,'
        '"character":{"name":"Vox"},"greeting":true,"resumed":false,"resumed_turns":0,'
        '"max_message_bytes":1024,"listening":{"mode":"push_to_talk"}}}'
    )


def test_session_start_may_ask_for_wake_word_listening() -> None:
    text = (
        '{"event":"session.start","seq":1,"payload":{"listening":{"mode":"wake_word",'
        '"wake_word":"okay_nabu","follow_up":"turn","silence_s":12}}}'
    )
    start = RelayDecoder(4096).receive_text(text).event
    assert isinstance(start, SessionStart)
    assert start.listening == Listening(
        ListeningMode.WAKE_WORD, "okay_nabu", FollowUp.TURN, silence_s=12.0
    )
    old = RelayDecoder(4096).receive_text('{"event":"session.start","seq":1}').event
    assert isinstance(old, SessionStart) and old.listening == Listening()


@pytest.mark.parametrize(
    ("listening", "needle"),
    [
        ('{"mode":"always"}', '"push_to_talk" or "wake_word"'),
        ('{"mode":"wake_word","follow_up":"forever"}', '"conversation" or "turn"'),
        ('{"mode":"wake_word","wake_word":3}', "wake_word"),
        ('{"mode":"wake_word","silence_s":0}', "silence_s"),
        ('{"mode":"wake_word","silence_s":"8"}', "silence_s"),
        ('"wake_word"', "listening"),
    ],
)
def test_bad_listening_is_a_bad_request_naming_the_field(listening: str, needle: str) -> None:
    error = protocol_error(
        f'{{"event":"session.start","seq":1,"payload":{{"listening":{listening}}}}}'
    )
    assert error.code == ErrorCode.BAD_REQUEST
    assert needle in str(error)


def test_wake_word_ready_and_events_on_the_wire() -> None:
    ready = Ready(
        session_id="abc",
        device="kitchen",
        input_rate_hz=16_000,
        output_rate_hz=24_000,
        turn_detection=TurnDetection.SERVER_VAD,
        partial_transcripts=False,
        barge_in=True,
        character_name="Vox",
        greeting=False,
        resumed_turns=None,
        max_message_bytes=1024,
        listening_mode=ListeningMode.WAKE_WORD,
        wake_word="hey_jarvis",
        follow_up=FollowUp.CONVERSATION,
        silence_s=8.0,
    )
    (frame,) = RelaySequencer().frames(ready_message(ready))
    assert frame.endswith(
        '"listening":{"mode":"wake_word","wake_word":"hey_jarvis","follow_up":"conversation",'
        '"silence_s":8.0,"state":"waiting"}}}'
    )
    assert wire([WakeWordHeard("hey_jarvis", 1234.5), WakeWordWaiting("silence")]) == [
        '{"event":"wake.detected","seq":1,"payload":{"wake_word":"hey_jarvis","at_ms":1234.5,'
        '"state":"listening"}}',
        '{"event":"wake.waiting","seq":2,"payload":{"reason":"silence","state":"waiting"}}',
    ]


def test_text_that_looks_like_the_envelope_cannot_confuse_the_sequencer() -> None:
    tricky = ReplyTextDelta(1, '","payload":{"x":1},"seq":99')
    (frame,) = wire([tricky])
    assert isinstance(frame, str)
    message = json.loads(frame)
    assert message["seq"] == 1 and message["payload"]["text"] == tricky.text


# -- fuzzing ---------------------------------------------------------------------------------

KNOWN = ["session.start", "input.commit", "reply.interrupt", "text.input", "playback.position"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
payload_keys = st.sampled_from(
    ["token", "input", "output", "turn_detection", "character", "greeting", "text", "turn_id",
     "played_ms", "sample_rate_hz", "audio_format", "partial_transcripts", "resume_session_id"]
)  # fmt: skip
payloads = st.dictionaries(payload_keys, json_values, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_an_event_or_a_protocol_error(text: str) -> None:
    with contextlib.suppress(ProtocolError):
        decode(text)


@settings(max_examples=500, deadline=None)
@given(
    name=st.sampled_from([*KNOWN, "session.end"]) | st.text(max_size=12),
    seq=json_values,
    payload=payloads | json_values,
)
def test_any_message_shape_gives_an_event_or_a_protocol_error(
    name: str, seq: object, payload: object
) -> None:
    text = json.dumps({"event": name, "seq": seq, "payload": payload})
    try:
        event = decode(text)
    except ProtocolError as exc:
        assert exc.code in {ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_EVENT}
        return
    assert type(event).__name__ in {
        "SessionStart", "InputCommit", "ReplyInterrupt", "TextInput", "PlaybackPosition",
        "SessionEnd",
    }  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_are_audio_or_too_large(data: bytes) -> None:
    try:
        assert decode_bytes(data) == AudioFrame(data)
    except ProtocolError as exc:
        assert exc.code == ErrorCode.MESSAGE_TOO_LARGE and len(data) > 1024


def decode_bytes(data: bytes) -> object:
    return RelayDecoder(1024).receive_bytes(data).event


events = st.one_of(
    st.builds(SpeechStarted, st.floats(0, 1e6)),
    st.builds(Transcript, st.text(), st.booleans()),
    st.builds(ReplyTextDelta, st.integers(1, 99), st.text()),
    st.builds(
        ReplyAudio,
        st.integers(1, 99),
        st.integers(0, 9),
        st.text(),
        st.booleans(),
        st.binary(max_size=64).map(lambda b: b[: len(b) // 2 * 2]),
        st.sampled_from([16_000, 24_000]),
    ),
    st.builds(Interrupted, st.integers(1, 99), st.text()),
    st.builds(ErrorEvent, st.sampled_from(list(ErrorCode)), st.text()),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(events, max_size=20))
def test_downlink_numbering_has_no_gaps_and_every_header_announces_its_audio(
    sent: list[Event],
) -> None:
    frames = wire(sent)
    seqs: list[int] = []
    expect_bytes: int | None = None
    for frame in frames:
        if isinstance(frame, bytes):
            assert expect_bytes == len(frame)
            expect_bytes = None
            continue
        assert expect_bytes is None, "a text message came between a header and its audio"
        message = json.loads(frame)
        assert set(message) == {"event", "seq", "payload"}
        seqs.append(message["seq"])
        if message["event"] == "tts.audio":
            expect_bytes = message["payload"]["bytes"]
    assert expect_bytes is None
    assert seqs == list(range(1, len(seqs) + 1))


def test_turn_done_carries_usage_and_cost() -> None:
    from voxgate.core.usage import EngineUsage

    usage = (
        EngineUsage("stt", "openai", "whisper-1", audio_s=2.0, cost_usd=0.0002),
        EngineUsage("llm", "llamacpp", "qwen", tokens_in=40, tokens_out=12, compute_s=0.4),
    )
    done = TurnDone(3, "q", "a", False, TurnTimings(), usage)
    (out,) = RelayEncoder().encode(done)
    assert isinstance(out.data, str)
    payload = json.loads(out.data)["payload"]
    assert payload["usage"]["cost_usd"] == pytest.approx(0.0002)
    stt, llm = payload["usage"]["engines"]
    assert stt["model"] == "whisper-1" and stt["audio_s"] == 2.0
    assert llm["tokens_in"] == 40 and llm["tokens_out"] == 12 and llm["capability"] == "llm"
