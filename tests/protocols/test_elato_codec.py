"""The ElatoAI codec on literals: messages both ways, the event encoder, device tokens."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import numpy as np
import opuslib
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
)
from voxgate.protocols import elato
from voxgate.protocols.elato import (
    AudioIn,
    ElatoEncoder,
    EndOfSpeech,
    EndSession,
    Interrupt,
    ServerMsg,
    auth_message,
    parse_message,
    says_goodbye,
    server_message,
)
from voxgate.protocols.frames import Outbound

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
MAC = "AA:BB:CC:DD:EE:FF"

CREATED = '{"type":"server","msg":"RESPONSE.CREATED"}'
COMPLETE = '{"type":"server","msg":"RESPONSE.COMPLETE"}'
ERROR = '{"type":"server","msg":"RESPONSE.ERROR"}'
COMMITTED = '{"type":"server","msg":"AUDIO.COMMITTED"}'
SESSION_END = '{"type":"server","msg":"SESSION.END"}'

# -- messages -------------------------------------------------------------------------------


def test_server_messages_are_the_literals_the_firmware_compares() -> None:
    assert auth_message() == (
        '{"type":"auth","volume_control":70,"pitch_factor":1.0,"is_ota":false,"is_reset":false}'
    )
    assert auth_message(volume_control=100, pitch_factor=0.8, is_ota=True) == (
        '{"type":"auth","volume_control":100,"pitch_factor":0.8,"is_ota":true,"is_reset":false}'
    )
    assert server_message(ServerMsg.RESPONSE_CREATED) == CREATED
    assert server_message(ServerMsg.RESPONSE_COMPLETE) == COMPLETE
    assert server_message(ServerMsg.RESPONSE_ERROR) == ERROR
    assert server_message(ServerMsg.AUDIO_COMMITTED) == COMMITTED
    assert server_message(ServerMsg.SESSION_END) == SESSION_END == elato.SESSION_END
    assert server_message(ServerMsg.RESPONSE_COMPLETE, volume_control=55) == (
        '{"type":"server","msg":"RESPONSE.COMPLETE","volume_control":55}'
    )
    with pytest.raises(ValueError):
        auth_message(volume_control=101)


def test_device_messages_parse() -> None:
    assert parse_message(b"\x01\x02\x03") == AudioIn(b"\x01\x02\x03")
    assert parse_message(b"") == AudioIn(b"")
    assert parse_message('{"type":"instruction","msg":"end_of_speech"}') == EndOfSpeech()
    assert parse_message('{"type": "instruction", "msg": "END_SESSION"}') == EndSession()
    assert parse_message('{"type":"instruction","msg":"INTERRUPT","audio_end_ms":1234}') == (
        Interrupt(1234.0)
    )
    assert parse_message('{"type":"instruction","msg":"INTERRUPT","audio_end_ms":12.5}') == (
        Interrupt(12.5)
    )
    assert parse_message('{"type":"instruction","msg":"INTERRUPT"}') == Interrupt(None)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", ErrorCode.BAD_REQUEST),
        ("not json", ErrorCode.BAD_REQUEST),
        ("[1, 2]", ErrorCode.BAD_REQUEST),
        ('"instruction"', ErrorCode.BAD_REQUEST),
        ('{"type":"server","msg":"RESPONSE.COMPLETE"}', ErrorCode.UNKNOWN_EVENT),
        ('{"msg":"end_of_speech"}', ErrorCode.UNKNOWN_EVENT),
        ('{"type":"instruction","msg":"interrupt"}', ErrorCode.UNKNOWN_EVENT),
        ('{"type":"instruction"}', ErrorCode.UNKNOWN_EVENT),
        ('{"type":"instruction","msg":"INTERRUPT","audio_end_ms":"12"}', ErrorCode.BAD_REQUEST),
        ('{"type":"instruction","msg":"INTERRUPT","audio_end_ms":true}', ErrorCode.BAD_REQUEST),
        ('{"type":"instruction","msg":"INTERRUPT","audio_end_ms":-1}', ErrorCode.BAD_REQUEST),
        ('{"type":"instruction","msg":"INTERRUPT","audio_end_ms":1e999}', ErrorCode.BAD_REQUEST),
        ('{"type":"instruction","msg":"INTERRUPT","audio_end_ms":NaN}', ErrorCode.BAD_REQUEST),
        ('{"type":"instruction","msg":"INTERRUPT","audio_end_ms":' + "9" * 400 + "}", None),
        ("[" * 100_000, ErrorCode.BAD_REQUEST),
    ],
)
def test_malformed_messages_raise_protocol_error(text: str, code: ErrorCode | None) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_message(text)
    if code is not None:
        assert caught.value.code == code


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
_near_instructions = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["instruction", "server", "auth", ""]) | _json_values,
        "msg": st.sampled_from(["end_of_speech", "INTERRUPT", "END_SESSION", "x"]) | _json_values,
    },
    optional={"audio_end_ms": _json_values},
).map(json.dumps)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), _near_instructions, _json_values.map(json.dumps)))
def test_fuzzed_text_gives_an_instruction_or_protocol_error_only(text: str) -> None:
    try:
        result = parse_message(text)
    except ProtocolError:
        return
    assert isinstance(result, EndOfSpeech | EndSession | Interrupt)


@given(st.binary(max_size=300))
def test_any_binary_frame_is_audio(data: bytes) -> None:
    assert parse_message(data) == AudioIn(data)


@pytest.mark.parametrize(
    ("text", "bye"),
    [
        ("Goodbye!", True),
        ("OK, bye.", True),
        ("Good bye then", True),
        ("See you later", True),
        ("Thanks, that's all.", True),
        ("That\u2019s all for today", True),
        ("That is all", True),
        ("What is the capital of France?", False),
        ("I want to buy a standby battery", False),
        ("Seeing you is nice", False),
        ("", False),
    ],
)
def test_goodbye_rule(text: str, bye: bool) -> None:
    assert says_goodbye(text) is bye


# -- the event encoder ----------------------------------------------------------------------


def _done(turn_id: int, user_text: str = "", *, interrupted: bool = False) -> TurnDone:
    return TurnDone(turn_id, user_text, "reply", interrupted, TurnTimings())


def _audio(turn_id: int, ms: float, rate_hz: int = 24_000) -> ReplyAudio:
    t = np.arange(round(rate_hz * ms / 1000)) / rate_hz
    pcm = (np.sin(2 * np.pi * 300 * t) * 8000).astype("<i2").tobytes()
    return ReplyAudio(turn_id, 0, "Hi.", True, pcm, rate_hz)


def _run(encoder: ElatoEncoder, *events: Event) -> list[Outbound]:
    return [out for event in events for out in encoder.encode(event)]


def _shape(frames: list[Outbound]) -> list[str]:
    """Text frames as they are, runs of Opus packets as "opus*n"."""
    shape: list[str] = []
    for frame in frames:
        if isinstance(frame.data, str):
            shape.append(frame.data)
        elif shape and shape[-1].startswith("opus*"):
            shape[-1] = f"opus*{int(shape[-1][5:]) + 1}"
        else:
            shape.append("opus*1")
    return shape


def test_greeting_then_a_spoken_turn() -> None:
    encoder = ElatoEncoder()
    frames = _run(
        encoder,
        ReplyStarted(1),
        ReplyTextDelta(1, "Hi."),
        _audio(1, 100),
        _audio(1, 200),  # 300 ms: two whole 120 ms frames, 60 ms left
        _done(1),
        SpeechStarted(1000.0),
        Transcript("partial", final=False),
        SpeechStopped(2000.0),
        Transcript("What is the capital of France?", final=True),
        ReplyStarted(2),
        _audio(2, 240),
        _done(2, "What is the capital of France?"),
    )
    assert _shape(frames) == [CREATED, "opus*3", COMPLETE, COMMITTED, CREATED, "opus*2", COMPLETE]
    audio = [frame for frame in frames if isinstance(frame.data, bytes)]
    assert [frame.turn_id for frame in audio] == [1, 1, 1, 2, 2]
    assert all(frame.audio_ms == 120.0 for frame in audio)
    assert all(frame.turn_id is None for frame in frames if isinstance(frame.data, str))
    decoder = opuslib.Decoder(24_000, 1)
    assert all(len(decoder.decode(frame.data, 2880)) == 2880 * 2 for frame in audio)  # type: ignore[arg-type]
    assert encoder.reply_turn_id is None and not encoder.ended


def test_audio_at_another_rate_is_resampled_to_24_khz() -> None:
    encoder = ElatoEncoder()
    frames = _run(encoder, ReplyStarted(1), _audio(1, 240, rate_hz=16_000), _done(1))
    assert _shape(frames) == [CREATED, "opus*2", COMPLETE]


@pytest.mark.parametrize(
    "code", [ErrorCode.NO_SPEECH, ErrorCode.STT_FAILED, ErrorCode.RATE_LIMITED]
)
def test_a_turn_without_a_reply_ends_with_response_error(code: ErrorCode) -> None:
    encoder = ElatoEncoder()
    _run(encoder, ReplyStarted(1), _done(1))
    frames = _run(encoder, SpeechStopped(900.0), ErrorEvent(code, "nope", 2))
    assert _shape(frames) == [COMMITTED, ERROR]
    # The device listens again: a later turn works as usual.
    frames = _run(encoder, SpeechStopped(3000.0), ReplyStarted(3), _audio(3, 120), _done(3))
    assert _shape(frames) == [COMMITTED, CREATED, "opus*1", COMPLETE]


def test_an_engine_failure_before_the_reply_gives_one_response_error() -> None:
    encoder = ElatoEncoder()
    _run(encoder, ReplyStarted(1), _done(1))
    frames = _run(
        encoder, SpeechStopped(900.0), ErrorEvent(ErrorCode.INTERNAL, "bug", 2), _done(2, "hm")
    )
    assert _shape(frames) == [COMMITTED, ERROR]


def test_errors_during_a_reply_do_not_end_it_and_idle_errors_are_not_sent() -> None:
    encoder = ElatoEncoder()
    frames = _run(
        encoder,
        ReplyStarted(1),
        ErrorEvent(ErrorCode.LLM_FAILED, "down", 1),
        _audio(1, 120),
        _done(1),
        ErrorEvent(ErrorCode.BAD_AUDIO, "odd", None),  # the device is listening: nothing to end
    )
    assert _shape(frames) == [CREATED, "opus*1", COMPLETE]


def test_an_interrupted_reply_drops_its_partial_frame_and_completes() -> None:
    encoder = ElatoEncoder()
    frames = _run(
        encoder,
        ReplyStarted(1),
        _audio(1, 200),
        Interrupted(1, "Hi"),
        _done(1, interrupted=True),
    )
    assert _shape(frames) == [CREATED, "opus*1", COMPLETE]
    # The dropped 80 ms do not leak into the next reply.
    frames = _run(encoder, ReplyStarted(2), _audio(2, 100), _done(2))
    assert _shape(frames) == [CREATED, "opus*1", COMPLETE]


def test_interrupting_a_turn_before_its_reply_began_completes_it() -> None:
    encoder = ElatoEncoder()
    _run(encoder, ReplyStarted(1), _done(1))
    frames = _run(encoder, SpeechStopped(500.0), Interrupted(2, ""), _done(2, interrupted=True))
    assert _shape(frames) == [COMMITTED, COMPLETE]


def test_goodbye_ends_the_session_after_the_reply() -> None:
    encoder = ElatoEncoder()
    _run(encoder, ReplyStarted(1), _done(1))
    frames = _run(
        encoder, SpeechStopped(1.0), ReplyStarted(2), _audio(2, 120), _done(2, "Okay, goodbye!")
    )
    assert _shape(frames) == [COMMITTED, CREATED, "opus*1", COMPLETE, SESSION_END]
    assert encoder.ended
    assert _run(encoder, SpeechStopped(2.0), ReplyStarted(3)) == []


# -- tokens ---------------------------------------------------------------------------------


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=="))
    return decoded


def test_token_has_elatos_claims_and_no_expiry() -> None:
    issued = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    token = elato.issue_token(SECRET, 7, MAC, issued_at=issued)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert _claims(token) == {
        "aud": "authenticated",
        "role": "authenticated",
        "sub": "7",
        "iat": int(issued.timestamp()),
        "user_metadata": {
            "user_id": "7",
            "mac_address": MAC,
            "created_time": "2025-01-02T03:04:05+00:00",
        },
        "gen": 0,
    }
    assert elato.verify_token(SECRET, token, mac=MAC) == elato.TokenClaims(device_id=7, mac=MAC)
    assert elato.verify_token(SECRET, token, mac=MAC.lower()).device_id == 7


def test_a_token_carries_its_generation_and_may_expire() -> None:
    issued = datetime.now(UTC)
    token = elato.issue_token(SECRET, 7, MAC, issued_at=issued, generation=3, ttl_s=60)
    assert _claims(token)["exp"] == int(issued.timestamp()) + 60
    assert elato.verify_token(SECRET, token, mac=MAC).generation == 3
    stale = elato.issue_token(SECRET, 7, MAC, issued_at=issued - timedelta(hours=2), ttl_s=60)
    with pytest.raises(ProtocolError, match="expired"):
        elato.verify_token(SECRET, stale, mac=MAC)
    assert elato.verify_token(SECRET, stale, mac=MAC, allow_expired=True).device_id == 7
    # Tokens from before generations (no "gen") are generation 0; a "gen" that is no number is
    # refused.
    old = {k: v for k, v in _claims(elato.issue_token(SECRET, 7, MAC)).items() if k != "gen"}
    assert elato.verify_token(SECRET, _forged(old), mac=MAC).generation == 0
    with pytest.raises(ProtocolError):
        elato.verify_token(SECRET, _forged({**old, "gen": "1"}), mac=MAC)


def _forged(claims: dict[str, object], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = _claims(token)
    claims["sub"] = "8"
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert body != payload
    return f"{header}.{body}.{signature}"


GOOD = {"aud": "authenticated", "role": "authenticated", "sub": "7"}


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(elato.issue_token("another-secret-that-is-long-enough-too", 7, MAC), id="key"),
        pytest.param(_tampered(elato.issue_token(SECRET, 7, MAC)), id="tampered"),
        pytest.param(
            _forged({**GOOD, "aud": "anon", "user_metadata": {"mac_address": MAC}}), id="aud"
        ),
        pytest.param(
            _forged({**GOOD, "role": "anon", "user_metadata": {"mac_address": MAC}}), id="role"
        ),
        pytest.param(
            _forged({**GOOD, "sub": "u-1", "user_metadata": {"mac_address": MAC}}), id="sub"
        ),
        pytest.param(_forged({**GOOD, "user_metadata": {}}), id="no-mac"),
        pytest.param(_forged({"role": "authenticated", "sub": "7"}), id="no-aud"),
        pytest.param(
            jwt.encode({**GOOD, "user_metadata": {"mac_address": MAC}}, None, algorithm="none"),
            id="alg-none",
        ),
        pytest.param("not.a.token", id="garbage"),
        pytest.param("", id="empty"),
    ],
)
def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        elato.verify_token(SECRET, token, mac=MAC)
    assert caught.value.code == ErrorCode.UNAUTHORIZED


def test_a_token_of_another_device_is_refused() -> None:
    token = elato.issue_token(SECRET, 3, "11:22:33:44:55:66")
    assert elato.verify_token(SECRET, token, mac="11:22:33:44:55:66").device_id == 3
    with pytest.raises(ProtocolError, match="issued to 11:22:33:44:55:66") as caught:
        elato.verify_token(SECRET, token, mac=MAC)
    assert caught.value.code == ErrorCode.UNAUTHORIZED


def test_the_assistant_ending_the_session_puts_the_device_to_sleep() -> None:
    from voxgate.core.events import SessionEndRequested

    encoder = ElatoEncoder()
    (out,) = encoder.encode(SessionEndRequested(turn_id=2))
    assert json.loads(out.data) == {"type": "server", "msg": "SESSION.END"}
    assert encoder.ended and encoder.encode(SpeechStopped(at_ms=1.0)) == []
