"""The voice-assistant-proxy codec on literals: chunk bodies, chunk bookkeeping, /ws frames,
the reply-body collector, the silence watchdog and its beep. No sockets."""

from __future__ import annotations

import base64
import contextlib
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.core.errors import ErrorCode, ProtocolError
from voxgate.core.events import (
    ErrorEvent,
    Interrupted,
    ReplyAudio,
    ReplyStarted,
    ReplyTextDelta,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    TurnDone,
    TurnTimings,
)
from voxgate.protocols.assistant_proxy import (
    AudioChunk,
    ChunkLedger,
    ChunkStatus,
    DownlinkEncoder,
    EndOfTurn,
    ReplyCollector,
    ReplyPhase,
    SilenceWatchdog,
    UplinkAudio,
    ack,
    beep,
    parse_audio_chunk,
    parse_ws_message,
)

# -- POST /v1/audio bodies --------------------------------------------------------------------


def test_a_firmware_chunk_parses() -> None:
    body = (
        b'{"session_id":"esp32-1a2b3c4d","chunk_index":3,"pcm_base64":"AAABAP//","is_final":false}'
    )
    assert parse_audio_chunk(body) == AudioChunk("esp32-1a2b3c4d", 3, b"\x00\x00\x01\x00\xff\xff")


def test_is_final_defaults_to_false_and_the_final_audio_may_be_empty() -> None:
    assert parse_audio_chunk('{"session_id":"s","chunk_index":0,"pcm_base64":""}') == AudioChunk(
        "s", 0, b"", is_final=False
    )
    final = parse_audio_chunk(b'{"session_id":"s","chunk_index":9,"pcm_base64":"","is_final":true}')
    assert final.is_final and final.pcm == b"" and final.chunk_index == 9


def test_unknown_fields_are_ignored() -> None:
    body = b'{"session_id":"s","chunk_index":0,"pcm_base64":"","extra":[1,2]}'
    assert parse_audio_chunk(body).session_id == "s"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'"text"', "JSON object"),
        (b'{"chunk_index":0,"pcm_base64":""}', "session_id"),
        (b'{"session_id":"","chunk_index":0,"pcm_base64":""}', "session_id"),
        (b'{"session_id":7,"chunk_index":0,"pcm_base64":""}', "session_id"),
        (b'{"session_id":"a\\r\\nX-Evil: 1","chunk_index":0,"pcm_base64":""}', "printable"),
        (b'{"session_id":"' + b"s" * 129 + b'","chunk_index":0,"pcm_base64":""}', "longer"),
        (b'{"session_id":"s","pcm_base64":""}', "chunk_index"),
        (b'{"session_id":"s","chunk_index":"1","pcm_base64":""}', "chunk_index"),
        (b'{"session_id":"s","chunk_index":1.0,"pcm_base64":""}', "chunk_index"),
        (b'{"session_id":"s","chunk_index":true,"pcm_base64":""}', "chunk_index"),
        (b'{"session_id":"s","chunk_index":-1,"pcm_base64":""}', "negative"),
        (b'{"session_id":"s","chunk_index":0}', "pcm_base64"),
        (b'{"session_id":"s","chunk_index":0,"pcm_base64":null}', "pcm_base64"),
        (b'{"session_id":"s","chunk_index":0,"pcm_base64":"AAA"}', "base64"),
        (b'{"session_id":"s","chunk_index":0,"pcm_base64":"AA$A"}', "base64"),
        (b'{"session_id":"s","chunk_index":0,"pcm_base64":"\xc3\xa9AAA"}', "base64"),
        (b'{"session_id":"s","chunk_index":0,"pcm_base64":"AAAA"}', "even"),
        (b'{"session_id":"s","chunk_index":0,"pcm_base64":"","is_final":"true"}', "is_final"),
        (b'{"session_id":"s","chunk_index":0,"pcm_base64":"","is_final":1}', "is_final"),
        (b'{"session_id":"s","chunk_index":0,"pcm_base64":"","is_final":null}', "is_final"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
)
def test_malformed_bodies_say_what_is_wrong(body: bytes, says: str) -> None:
    with pytest.raises(ProtocolError, match=says) as raised:
        parse_audio_chunk(body)
    assert raised.value.code is ErrorCode.BAD_REQUEST


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_protocol_error(body: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_audio_chunk(body)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
_FIELDS = st.sampled_from(["session_id", "chunk_index", "pcm_base64", "is_final", "x"])
_VALUES = _JSON | st.binary(max_size=16).map(lambda b: base64.b64encode(b).decode())


@given(st.dictionaries(_FIELDS, _VALUES))
def test_any_json_object_parses_into_a_valid_chunk_or_raises_protocol_error(
    data: dict[str, object],
) -> None:
    try:
        chunk = parse_audio_chunk(json.dumps(data))
    except ProtocolError:
        return
    assert chunk.session_id and chunk.chunk_index >= 0 and len(chunk.pcm) % 2 == 0


# -- chunk bookkeeping ------------------------------------------------------------------------


def _chunk(index: int, final: bool = False) -> AudioChunk:
    return AudioChunk("s", index, b"", is_final=final)


def test_retried_indices_are_duplicates_and_the_final_chunk_starts_the_count_over() -> None:
    ledger = ChunkLedger()
    seen = []
    for index, final in [(0, False), (1, False), (1, False), (0, False), (2, False), (2, True)]:
        status = ledger.status(_chunk(index, final))
        if status is not ChunkStatus.DUPLICATE:
            ledger.record(_chunk(index, final))
        seen.append(status)
    assert seen == ["partial", "partial", "duplicate", "duplicate", "partial", "duplicate"]
    assert ledger.status(_chunk(3, True)) is ChunkStatus.FINAL
    ledger.record(_chunk(3, True))
    # The firmware counts from 0 in every turn.
    assert ledger.status(_chunk(0)) is ChunkStatus.PARTIAL


def test_a_chunk_that_was_not_recorded_can_be_retried() -> None:
    ledger = ChunkLedger()
    assert ledger.status(_chunk(0)) is ChunkStatus.PARTIAL
    assert ledger.status(_chunk(0)) is ChunkStatus.PARTIAL  # handling failed: not recorded


@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), max_size=30))
def test_duplicate_exactly_when_not_above_the_highest_index_of_the_turn(
    chunks: list[tuple[int, bool]],
) -> None:
    ledger = ChunkLedger()
    highest = -1
    for index, final in chunks:
        status = ledger.status(_chunk(index, final))
        if index <= highest:
            assert status is ChunkStatus.DUPLICATE
            continue
        assert status is (ChunkStatus.FINAL if final else ChunkStatus.PARTIAL)
        ledger.record(_chunk(index, final))
        highest = -1 if final else index


def test_acks_are_the_original_json() -> None:
    assert json.dumps(ack(ChunkStatus.PARTIAL)) == '{"status": "partial"}'
    assert json.dumps(ack(ChunkStatus.DUPLICATE)) == '{"status": "duplicate"}'


# -- /ws frames -------------------------------------------------------------------------------


def test_binary_frames_are_audio_and_an_empty_one_ends_the_turn() -> None:
    assert parse_ws_message(b"\x01\x00\x02\x00") == UplinkAudio(b"\x01\x00\x02\x00")
    assert parse_ws_message(b"") == EndOfTurn()
    with pytest.raises(ProtocolError, match="text frames"):
        parse_ws_message('{"type":"hello"}')


@given(st.binary(max_size=64) | st.text(max_size=64))
def test_any_ws_message_is_audio_end_or_protocol_error(data: bytes | str) -> None:
    try:
        parse_ws_message(data)
    except ProtocolError:
        assert isinstance(data, str)


def _audio(turn_id: int, ms: int, *, level: int = 1000, index: int = 0) -> ReplyAudio:
    pcm = np.full(24 * ms, level, dtype="<i2").tobytes()
    return ReplyAudio(turn_id, index, "Hi there.", index == 0, pcm, 24_000)


def test_downlink_speech_events_are_the_firmware_texts_and_audio_is_raw_pcm_frames() -> None:
    encoder = DownlinkEncoder()
    assert [o.data for o in encoder.encode(SpeechStarted(at_ms=0))] == ['{"type":"speech_start"}']
    assert [o.data for o in encoder.encode(SpeechStopped(at_ms=900))] == ['{"type":"speech_end"}']
    audio = _audio(turn_id=4, ms=250)
    frames = encoder.encode(audio)
    assert [len(f.data) for f in frames] == [4800, 4800, 2400]
    assert [f.audio_ms for f in frames] == [100.0, 100.0, 50.0]
    assert {f.turn_id for f in frames} == {4}
    assert b"".join(f.data for f in frames if isinstance(f.data, bytes)) == audio.pcm
    for quiet in (Transcript("hi", final=True), ReplyStarted(4), ReplyTextDelta(4, "Hi")):
        assert encoder.encode(quiet) == []


# -- the body of a final chunk's answer -------------------------------------------------------


def _done(turn_id: int) -> TurnDone:
    return TurnDone(turn_id, "question", "answer", interrupted=False, timings=TurnTimings())


def test_collector_gathers_the_reply_of_the_turn_and_knows_when_it_is_over() -> None:
    collector = ReplyCollector()
    assert not collector.expecting
    collector.feed(SpeechStarted(at_ms=100))
    assert collector.speaking and not collector.expecting
    collector.feed(SpeechStopped(at_ms=900))
    assert collector.expecting and not collector.finished and not collector.speaking
    for event in (Transcript("question", True), ReplyStarted(1), _audio(1, 100)):
        collector.feed(event)
    first = collector.take_audio()
    collector.feed(ErrorEvent(ErrorCode.TTS_FAILED, "one sentence failed", 1))
    collector.feed(_audio(1, 50, level=7, index=1))
    assert not collector.finished
    collector.feed(_done(1))
    assert collector.finished and collector.turn_id == 1 and collector.error is ErrorCode.TTS_FAILED
    assert len(first) == 4800 and collector.take_audio() == np.full(1200, 7, "<i2").tobytes()
    assert collector.audio_ms == 150.0
    collector.reset()
    assert collector.phase is ReplyPhase.IDLE and not collector.has_audio


@pytest.mark.parametrize(
    "code", [ErrorCode.NO_SPEECH, ErrorCode.STT_FAILED, ErrorCode.RATE_LIMITED]
)
def test_an_error_before_the_reply_starts_ends_the_turn(code: ErrorCode) -> None:
    collector = ReplyCollector()
    collector.feed(ErrorEvent(ErrorCode.BAD_AUDIO, "between turns: not this turn's"))
    collector.feed(SpeechStopped(at_ms=0))
    collector.feed(ErrorEvent(code, "no reply"))
    assert collector.finished and collector.error is code and not collector.has_audio


def test_an_abandoned_reply_is_dropped_up_to_its_end_and_the_next_turn_is_clean() -> None:
    collector = ReplyCollector()
    for event in (SpeechStopped(at_ms=0), ReplyStarted(1), _audio(1, 100)):
        collector.feed(event)
    collector.abandon()
    for event in (_audio(1, 100), Interrupted(1, "Hi"), _done(1)):
        collector.feed(event)
    assert collector.phase is ReplyPhase.IDLE and not collector.has_audio
    for event in (SpeechStopped(at_ms=5000), ReplyStarted(2), _audio(2, 100), _done(2)):
        collector.feed(event)
    assert collector.finished and collector.turn_id == 2 and len(collector.take_audio()) == 4800


def test_a_turn_the_server_ended_on_its_own_waits_with_its_reply_for_the_final_chunk() -> None:
    collector = ReplyCollector()
    for event in (SpeechStarted(0), SpeechStopped(30_000), ReplyStarted(1), _audio(1, 100)):
        collector.feed(event)
    collector.feed(_done(1))
    collector.feed(SpeechStarted(31_000))
    collector.feed(SpeechStopped(32_000))  # the rest of the monologue, committed by the device
    assert collector.expecting and not collector.finished and collector.has_audio


# -- silence timeout --------------------------------------------------------------------------


def test_watchdog_fires_after_the_timeout_without_speech() -> None:
    watchdog = SilenceWatchdog(timeout_s=20.0, now=100.0)
    assert watchdog.remaining_s(105.0) == 15.0
    assert not watchdog.expired(119.9)
    assert watchdog.expired(120.0)


def test_watchdog_waits_while_the_user_speaks_and_the_reply_is_made_then_restarts() -> None:
    watchdog = SilenceWatchdog(timeout_s=1.0, now=0.0)
    watchdog.note(SpeechStarted(at_ms=500), now=0.5)
    assert not watchdog.expired(50.0)
    watchdog.note(SpeechStopped(at_ms=60_000), now=60.0)
    watchdog.note(Transcript("hello", final=True), now=61.0)
    assert not watchdog.expired(70.0)  # the reply is being made
    watchdog.note(ReplyStarted(1), now=70.5)
    watchdog.note(ErrorEvent(ErrorCode.LLM_FAILED, "retrying", 1), now=70.6)
    watchdog.note(_audio(1, 100), now=71.0)
    assert not watchdog.expired(75.0)
    watchdog.note(_done(1), now=80.0)
    assert not watchdog.expired(80.9)
    assert watchdog.expired(81.0)


def test_watchdog_an_unheard_turn_ends_the_wait_for_a_reply() -> None:
    watchdog = SilenceWatchdog(timeout_s=1.0, now=0.0)
    watchdog.note(SpeechStopped(at_ms=0), now=0.0)
    watchdog.note(ErrorEvent(ErrorCode.NO_SPEECH, "heard nothing", 1), now=0.2)
    assert not watchdog.expired(1.1)
    assert watchdog.expired(1.2)


def test_beep_is_200_ms_of_800_hz_at_24_khz_with_soft_edges() -> None:
    samples = np.frombuffer(beep(), dtype="<i2").astype(np.int32)
    assert len(samples) == 4800
    crossings = int(np.count_nonzero(np.diff(np.signbit(samples[1:-1]))))
    assert abs(crossings - 320) <= 4  # 800 Hz: two crossings a period, 160 periods
    assert 0.29 * 32767 < np.abs(samples).max() <= 0.3 * 32767 + 1
    assert abs(samples[0]) < 100 and abs(samples[-1]) < 500
