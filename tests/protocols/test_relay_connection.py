"""The relay connection's rules on literals: handshake order, seq gaps, how each failure closes."""

from __future__ import annotations

import json

from voxgate.core.errors import ErrorCode
from voxgate.protocols.closing import Close, CloseCode, Ending
from voxgate.protocols.relay import (
    PROTOCOL_VERSION,
    AudioFrame,
    Inbound,
    InputCommit,
    RelayConnection,
    SessionStart,
    close_for,
    error_message,
)

START = '{"event":"session.start","seq":1,"payload":{"token":"t"}}'


def started() -> RelayConnection:
    connection = RelayConnection(1024)
    assert connection.receive_text(START) == Inbound((SessionStart(token="t"),))
    return connection


def fatal(code: str, message: str) -> str:
    return (
        f'{{"event":"error","seq":1,"payload":{{"code":"{code}","message":"{message}",'
        f'"turn_id":null,"fatal":true,"protocol_version":"{PROTOCOL_VERSION}"}}}}'
    )


def test_audio_before_session_start_closes_with_4400_and_says_why() -> None:
    connection = RelayConnection(1024)
    inbound = connection.receive_bytes(b"\x00\x01")
    assert inbound.events == ()
    close = inbound.close
    assert close is not None
    assert (close.code, close.reason, close.error) == (
        CloseCode.PROTOCOL_VIOLATION,
        "audio before session.start",
        ErrorCode.BAD_REQUEST,
    )
    assert close.last is not None
    assert connection.frames(close.last) == [fatal("bad_request", "audio before session.start")]
    assert connection.closed
    assert connection.receive_text(START) == Inbound()  # nothing after the close


def test_anything_but_session_start_first_is_an_error_that_does_not_close() -> None:
    connection = RelayConnection(1024)
    inbound = connection.receive_text('{"event":"input.commit","seq":1}')
    assert inbound == Inbound(errors=((ErrorCode.BAD_REQUEST, "send session.start first"),))
    bad_json = connection.receive_text("{not json")
    assert bad_json.errors[0][0] == ErrorCode.BAD_REQUEST and bad_json.close is None
    assert connection.start is None
    # A seq gap before the start is not reported: the start is what counts.
    start = '{"event":"session.start","seq":7,"payload":{"turn_detection":"client"}}'
    assert connection.receive_text(start).errors == ()
    assert connection.start is not None and connection.start.turn_detection.value == "client"


def test_a_second_session_start_is_an_error_and_not_an_event() -> None:
    connection = started()
    again = connection.receive_text('{"event":"session.start","seq":2,"payload":{}}')
    assert again == Inbound(errors=((ErrorCode.BAD_REQUEST, "the session has already started"),))
    assert connection.start == SessionStart(token="t")


def test_a_seq_gap_is_reported_and_the_message_still_taken() -> None:
    connection = started()
    inbound = connection.receive_text('{"event":"input.commit","seq":5}')
    assert inbound == Inbound(
        (InputCommit(),), errors=((ErrorCode.SEQ_GAP, "expected seq 2, got 5"),)
    )
    assert connection.receive_text('{"event":"input.commit","seq":6}') == Inbound((InputCommit(),))
    assert connection.receive_bytes(b"\x01\x00") == Inbound((AudioFrame(b"\x01\x00"),))


def test_session_end_closes_normally_with_session_end() -> None:
    connection = started()
    inbound = connection.receive_text('{"event":"session.end","seq":2}')
    assert inbound.close is not None and inbound.close.code == CloseCode.NORMAL
    assert inbound.close.last is not None
    assert connection.frames(inbound.close.last) == [
        '{"event":"session.end","seq":1,"payload":{"reason":"client"}}'
    ]
    assert connection.receive_bytes(b"\x00\x00") == Inbound()


def test_a_message_over_the_limit_closes_with_1009() -> None:
    connection = started()
    inbound = connection.receive_bytes(bytes(1025))
    assert inbound.close is not None
    assert (inbound.close.code, inbound.close.error) == (
        CloseCode.MESSAGE_TOO_BIG,
        ErrorCode.MESSAGE_TOO_LARGE,
    )
    assert inbound.close.reason == "message of 1025 bytes exceeds 1024"


def test_errors_and_downlink_share_one_numbering() -> None:
    connection = started()
    inbound = connection.receive_text('{"event":"nope","seq":2}')
    ((code, message),) = inbound.errors
    assert code == ErrorCode.UNKNOWN_EVENT
    (first,) = connection.frames(error_message(code, message))
    (second,) = connection.frames(close_for(Ending.SERVER_SHUTDOWN).last or "")
    assert [json.loads(frame)["seq"] for frame in (first, second)] == [1, 2]


def test_the_close_table() -> None:
    """docs/protocols/relay.md's close codes, ending by ending."""
    codes = {ending: close_for(ending, "detail").code for ending in Ending}
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
        Ending.SLOW_CLIENT: 4408,
        Ending.INTERNAL: 1011,
    }
    # A client that stopped reading gets no last message; a refusal says why, fatally.
    assert close_for(Ending.SLOW_CLIENT) == Close(CloseCode.TIMEOUT)
    limited = close_for(Ending.RATE_LIMITED, "retry in 3 s")
    assert limited.reason == "too many connections for this device; retry in 3 s"
    assert limited.last is not None and json.loads(limited.last)["payload"]["fatal"] is True
    timeout = close_for(Ending.TIMEOUT)
    assert (timeout.error, timeout.reason) == (ErrorCode.BAD_REQUEST, "no session.start in time")
