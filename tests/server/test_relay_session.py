"""The relay protocol over a real socket, with a client written from docs/protocols/relay.md."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.fakes import FakeLLM, Fakes, FakeTTS, bounded, concat, pcm_bytes, silence, tone
from tests.server_harness import open_store, running_server, server_settings
from voxgate.client import converse, run_client
from voxgate.core.audio import int16_to_float, read_wav, resample, write_wav
from voxgate.core.capabilities import ToolCall
from voxgate.core.config import Settings
from voxgate.evaluation import character_error_rate, normalize_words
from voxgate.pipeline import Engines
from voxgate.server.context import ServerContext
from voxgate.server.transports import relay as relay_transport
from voxgate.store import Store

LONG_REPLY = ["One two three four five six. ", "Seven eight nine ten eleven twelve. "] * 3


@dataclass
class Server:
    address: str
    token: str
    store: Store
    fakes: Fakes

    @property
    def url(self) -> str:
        return f"ws://{self.address}/v1/relay"

    async def open_sessions(self) -> int:
        async with httpx.AsyncClient(base_url=f"http://{self.address}") as http:
            return int((await http.get("/healthz")).json()["sessions"])

    async def metric(self, name: str) -> float:
        async with httpx.AsyncClient(base_url=f"http://{self.address}") as http:
            text = (await http.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith(f'{name}{{protocol="relay"}}'):
                return float(line.split()[-1])
        return 0.0


@asynccontextmanager
async def serve(
    tmp_path: Path, fakes: Fakes | None = None, **server: object
) -> AsyncIterator[Server]:
    fakes = fakes or Fakes()
    engines = fakes.engines()
    store = await open_store(tmp_path)
    _, token = await store.devices.add("kitchen")
    try:
        async with running_server(server_settings(tmp_path, **server), engines, store) as address:
            yield Server(address, token, store, fakes)
    finally:
        engines.close()
        await store.close()


class SpecClient:
    """The protocol as the schema states it: numbered JSON both ways, audio after its header."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seq = 0
        self.server_seq = 0
        self.received: list[dict[str, Any]] = []

    async def send(self, event: str, payload: dict[str, Any] | None = None) -> None:
        self.seq += 1
        await self.ws.send(json.dumps({"event": event, "seq": self.seq, "payload": payload or {}}))

    async def next(self, timeout_s: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            frame = await self.ws.recv()
            assert isinstance(frame, str), "binary audio without a tts.audio header"
            message: dict[str, Any] = json.loads(frame)
            assert set(message) == {"event", "seq", "payload"}
            assert message["seq"] == self.server_seq + 1, (message, self.server_seq)
            self.server_seq = message["seq"]
            if message["event"] == "tts.audio":
                audio = await self.ws.recv()
                assert isinstance(audio, bytes) and len(audio) == message["payload"]["bytes"]
                message["audio"] = audio
        self.received.append(message)
        return message

    async def until(self, event: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """Messages up to and including the next ``event``."""
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout_s):
            while True:
                seen.append(await self.next(timeout_s))
                if seen[-1]["event"] == event:
                    return seen

    async def start(self, **payload: Any) -> dict[str, Any]:
        await self.send("session.start", payload)
        ready = await self.next()
        assert ready["event"] == "session.ready", ready
        return ready["payload"]

    async def close_code(self, timeout_s: float = 5.0) -> int | None:
        """Read until the server closes; its close code."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    frame = await self.ws.recv()
                    if isinstance(frame, str):
                        self.received.append(json.loads(frame))
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None


@asynccontextmanager
async def client(
    url: str, token: str | None = None, *, query: str = ""
) -> AsyncIterator[SpecClient]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with connect(url + query, additional_headers=headers, proxy=None) as ws:
        yield SpecClient(ws)


def names(messages: list[dict[str, Any]]) -> list[str]:
    return [message["event"] for message in messages]


async def speak(c: SpecClient, samples: np.ndarray, rate_hz: int = 16_000) -> None:
    frame = rate_hz // 50  # 20 ms
    for offset in range(0, len(samples), frame):
        await c.ws.send(pcm_bytes(samples[offset : offset + frame]))


# -- auth ------------------------------------------------------------------------------------


@bounded(30)
@pytest.mark.parametrize("where", ["header", "query", "message"])
async def test_a_device_token_is_accepted_from_header_query_or_session_start(
    tmp_path: Path, where: str
) -> None:
    async with serve(tmp_path) as server:
        token = server.token
        header = token if where == "header" else None
        query = f"?token={token}" if where == "query" else ""
        async with client(server.url, header, query=query) as c:
            extra = {"token": token} if where == "message" else {}
            ready = await c.start(**extra)
            assert await server.open_sessions() == 1
            assert await server.metric("voxgate_sessions_open") == 1
    assert ready["protocol_version"] == "1.1" and ready["device"] == "kitchen"
    assert ready["input"] == {"audio_format": "pcm16", "sample_rate_hz": 16000, "channels": 1}
    assert ready["output"]["sample_rate_hz"] == 24000
    assert ready["turn_detection"] == "server_vad" and ready["session_id"]


@bounded(30)
@pytest.mark.parametrize(
    "case", ["bad header", "bad query", "bad in message", "missing", "revoked"]
)
async def test_a_bad_or_missing_token_is_refused_with_4401(tmp_path: Path, case: str) -> None:
    async with serve(tmp_path) as server:
        header = "nope" if case == "bad header" else None
        query = "?token=nope" if case == "bad query" else ""
        if case == "revoked":
            _, revoked = await server.store.devices.add("old")
            await server.store.devices.revoke("old")
            header = revoked
        async with client(server.url, header, query=query) as c:
            if case in {"bad in message", "missing"}:
                await c.send("session.start", {"token": "nope"} if case == "bad in message" else {})
            code = await c.close_code()
        assert await server.open_sessions() == 0
    assert code == 4401
    (error,) = c.received
    assert error["event"] == "error" and error["seq"] == 1
    assert error["payload"]["code"] == "unauthorized" and error["payload"]["fatal"] is True
    assert error["payload"]["protocol_version"] == "1.1"


@bounded(30)
async def test_the_third_connection_in_a_minute_is_refused_when_the_limit_is_two(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path, connections_per_minute=2) as server:
        for _ in range(2):
            async with client(server.url, server.token) as c:
                await c.start()
        async with client(server.url, server.token) as c:
            await c.send("session.start")
            code = await c.close_code()
    assert code == 4429
    assert c.received[0]["payload"]["code"] == "rate_limited"
    assert "retry in" in c.received[0]["payload"]["message"]


# -- turns -----------------------------------------------------------------------------------


@bounded(30)
async def test_a_spoken_turn_comes_back_in_order_with_consecutive_seq(tmp_path: Path) -> None:
    async with serve(tmp_path) as server, client(server.url, server.token) as c:
        await c.start()
        await speak(c, concat(tone(600), silence(900)))
        turn = await c.until("turn.done")
        assert await server.metric("voxgate_bytes_in_total") > 16_000 * 2 * 0.6  # the speech
    kinds = names(turn)
    order = ["speech.started", "speech.stopped", "asr.final", "llm.token", "tts.audio", "turn.done"]
    assert [kinds.index(kind) for kind in order] == sorted(kinds.index(kind) for kind in order)
    assert "error" not in kinds
    assert [m["seq"] for m in c.received] == list(range(1, len(c.received) + 1))
    audio = [m for m in turn if m["event"] == "tts.audio"]
    assert all(m["payload"]["sample_rate_hz"] == 24000 for m in audio)
    assert audio[0]["payload"]["sentence_start"] and audio[0]["payload"]["sentence_text"] == "Okay."
    done = turn[-1]["payload"]
    assert done["reply_text"] == "Okay." and done["user_text"].startswith("I spoke for")
    assert done["timings"]["stt_ms"] is not None
    assert done["timings"]["speech_end_to_first_audio_ms"] is not None


@bounded(30)
async def test_a_typed_turn(tmp_path: Path) -> None:
    fakes = Fakes(llm=FakeLLM(["Paris ", "is the capital."]))
    async with serve(tmp_path, fakes) as server, client(server.url, server.token) as c:
        await c.start()
        await c.send("text.input", {"text": "What is the capital of France?"})
        turn = await c.until("turn.done")
    assert "asr.final" not in names(turn) and "speech.started" not in names(turn)
    tokens = "".join(m["payload"]["text"] for m in turn if m["event"] == "llm.token")
    assert tokens == "Paris is the capital."
    assert turn[-1]["payload"]["user_text"] == "What is the capital of France?"
    assert fakes.llm.calls[0][-1].content == "What is the capital of France?"


@bounded(30)
async def test_client_vad_mode_waits_for_input_commit(tmp_path: Path) -> None:
    async with serve(tmp_path) as server, client(server.url, server.token) as c:
        ready = await c.start(turn_detection="client")
        # 1.5 s of silence: three times the server's end-of-turn silence.
        await speak(c, concat(tone(600), silence(1500)))
        assert (await c.next())["event"] == "speech.started"
        with pytest.raises(TimeoutError):
            await c.next(timeout_s=0.7)
        await c.send("input.commit")
        turn = await c.until("turn.done")
    assert ready["turn_detection"] == "client"
    assert names(turn)[:2] == ["speech.stopped", "asr.final"]
    assert turn[-1]["payload"]["timings"]["speculative"] is False


@bounded(30)
async def test_reply_interrupt_stops_the_audio_and_keeps_what_was_heard(tmp_path: Path) -> None:
    fakes = Fakes(llm=FakeLLM(LONG_REPLY, ["Fine."]), tts=FakeTTS(ms_per_word=300))
    async with serve(tmp_path, fakes) as server, client(server.url, server.token) as c:
        await c.start()
        await c.send("text.input", {"text": "Count for me."})
        before = await c.until("tts.audio")
        turn_id = before[-1]["payload"]["turn_id"]
        # The user has heard nothing yet: the history must keep nothing of the reply.
        await c.send("playback.position", {"turn_id": turn_id, "played_ms": 0})
        await c.send("reply.interrupt")
        after = await c.until("turn.done")
        await asyncio.sleep(0.5)
        await c.send("text.input", {"text": "And now?"})
        following = await c.until("turn.done")
    kinds = names(after)
    interrupted = after[kinds.index("reply.interrupted")]
    assert interrupted["payload"] == {"turn_id": turn_id, "heard_text": ""}
    late_audio = [m for m in after[kinds.index("reply.interrupted") :] if m["event"] == "tts.audio"]
    assert late_audio == []
    assert after[-1]["payload"]["interrupted"] is True and after[-1]["payload"]["reply_text"] == ""
    assert all(m["payload"]["turn_id"] != turn_id for m in following if m["event"] == "tts.audio")
    assert following[-1]["payload"]["interrupted"] is False
    # Only what was heard (nothing) went into the history the LLM sees next.
    assert [m.role for m in fakes.llm.calls[1]] == ["system", "user", "user"]


@bounded(30)
async def test_unknown_events_bad_json_and_seq_gaps_are_errors_that_keep_the_session(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path) as server, client(server.url, server.token) as c:
        await c.start()
        await c.send("dance", {"style": "tango"})
        unknown = await c.next()
        c.seq += 1
        await c.ws.send("{this is not json")
        malformed = await c.next()
        await c.send("text.input", {"text": 42})
        bad_field = await c.next()
        c.seq += 5  # a gap the server must notice
        await c.send("text.input", {"text": "still there?"})
        gap = await c.next()
        turn = await c.until("turn.done")
    assert (unknown["event"], unknown["payload"]["code"]) == ("error", "unknown_event")
    assert (
        malformed["payload"]["code"] == "bad_request" and "JSON" in malformed["payload"]["message"]
    )
    assert (
        bad_field["payload"]["code"] == "bad_request" and "text" in bad_field["payload"]["message"]
    )
    # The malformed message consumed a number the server could not read, hence expected 4.
    assert gap["payload"]["code"] == "seq_gap" and "expected seq 5" in gap["payload"]["message"]
    assert not any(m["payload"]["fatal"] for m in (unknown, malformed, bad_field, gap))
    assert turn[-1]["payload"]["user_text"] == "still there?"


@bounded(30)
async def test_audio_before_session_start_is_refused(tmp_path: Path) -> None:
    async with serve(tmp_path) as server, client(server.url, server.token) as c:
        await c.ws.send(pcm_bytes(silence(20)))
        code = await c.close_code()
        assert await server.open_sessions() == 0
    assert code == 4400
    assert c.received[0]["payload"]["code"] == "bad_request" and c.received[0]["payload"]["fatal"]


@bounded(30)
async def test_text_before_session_start_is_an_error_that_keeps_the_connection(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path) as server, client(server.url) as c:
        await c.send("text.input", {"text": "hello"})
        error = await c.next()
        ready = await c.start(token=server.token)
    assert error["payload"]["code"] == "bad_request" and not error["payload"]["fatal"]
    assert ready["device"] == "kitchen"


@bounded(30)
async def test_a_message_over_the_size_limit_closes_with_1009(tmp_path: Path) -> None:
    async with serve(tmp_path, max_message_bytes=2048) as server:
        async with client(server.url, server.token) as c:
            await c.start()
            await c.ws.send(bytes(4096))
            code = await c.close_code()
        assert await server.open_sessions() == 0
    assert code == 1009
    assert c.received[-1]["payload"]["code"] == "message_too_large"


@bounded(30)
async def test_session_end_is_answered_and_closed_normally(tmp_path: Path) -> None:
    async with serve(tmp_path) as server, client(server.url, server.token) as c:
        await c.start()
        await c.send("session.end")
        code = await c.close_code()
    assert code == 1000
    assert c.received[-1] == {"event": "session.end", "seq": 2, "payload": {"reason": "client"}}


@bounded(30)
async def test_disconnect_mid_reply_closes_the_session(tmp_path: Path) -> None:
    fakes = Fakes(llm=FakeLLM(LONG_REPLY, delay_s=0.2), tts=FakeTTS(ms_per_word=300))
    async with serve(tmp_path, fakes) as server:
        async with client(server.url, server.token) as c:
            await c.start()
            await c.send("text.input", {"text": "Count for me."})
            await c.until("tts.audio")
            assert await server.open_sessions() == 1
            c.ws.transport.abort()  # no close handshake: the socket just goes
        async with asyncio.timeout(5):
            while await server.open_sessions():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert await server.metric("voxgate_sessions_open") == 0
        assert await server.metric("voxgate_sessions_total") == 1
    assert fakes.llm.completed == 0 and fakes.llm.closed_early == 1


@bounded(30)
async def test_greeting_persona_and_output_rate_are_negotiated(tmp_path: Path) -> None:
    fakes = Fakes()
    async with serve(tmp_path, fakes) as server, client(server.url, server.token) as c:
        ready = await c.start(
            output={"sample_rate_hz": 16000},
            character={
                "name": "Ada",
                "system_prompt": "You are Ada.",
                "first_message": "Hi, Ada here.",
            },
        )
        greeting = await c.until("turn.done")
        # Played to the end, so the next turn does not cut the greeting short.
        played_ms = sum(m["payload"]["duration_ms"] for m in greeting if m["event"] == "tts.audio")
        turn_id = greeting[-1]["payload"]["turn_id"]
        await c.send("playback.position", {"turn_id": turn_id, "played_ms": played_ms})
        await c.send("text.input", {"text": "Who are you?"})
        await c.until("turn.done")
    assert ready["character"] == {"name": "Ada"} and ready["output"]["sample_rate_hz"] == 16000
    assert greeting[-1]["payload"]["reply_text"] == "Hi, Ada here."
    assert {m["payload"]["sample_rate_hz"] for m in greeting if m["event"] == "tts.audio"} == {
        16000
    }
    assert fakes.llm.calls[0][0].content == "You are Ada."
    assert [m.content for m in fakes.llm.calls[0][1:]] == ["Hi, Ada here.", "Who are you?"]


@bounded(30)
async def test_a_device_continues_its_conversation_in_its_next_session(tmp_path: Path) -> None:
    """From the database; ``resume_session_id`` keeps that session's id too."""
    fakes = Fakes(llm=FakeLLM(["Noted."], ["You are Alice."]))
    async with serve(tmp_path, fakes) as server:
        async with client(server.url, server.token) as c:
            first = await c.start()
            await c.send("text.input", {"text": "My name is Alice."})
            await c.until("turn.done")
            await c.send("session.end")
            await c.close_code()
        async with client(server.url, server.token) as c:
            second = await c.start(resume_session_id=first["session_id"])
            await c.send("text.input", {"text": "Who am I?"})
            await c.until("turn.done")
        async with client(server.url, server.token) as c:
            unknown = await c.start(resume_session_id="nonexistent")
    assert (first["resumed"], second["resumed"], second["resumed_turns"]) == (False, True, 1)
    assert second["session_id"] == first["session_id"]
    # An unknown session id is no error: a new id, and the device's conversation goes on.
    assert unknown["session_id"] != first["session_id"]
    assert (unknown["resumed"], unknown["resumed_turns"]) == (True, 2)
    assert [m.content for m in fakes.llm.calls[1][1:]] == [
        "My name is Alice.",
        "Noted.",
        "Who am I?",
    ]


@bounded(60)
async def test_random_frames_do_not_break_the_server(tmp_path: Path) -> None:
    rng = random.Random(7)
    events = [
        "input.commit",
        "reply.interrupt",
        "text.input",
        "playback.position",
        "session.start",
        "x",
    ]
    values: list[Any] = [
        None,
        True,
        -1,
        0,
        3,
        1e308,
        "",
        "hi",
        "\ud800",
        [],
        {},
        {"sample_rate_hz": 8000},
    ]
    keys = ["text", "turn_id", "played_ms", "input", "output", "character", "greeting"]
    async with serve(tmp_path) as server:
        async with client(server.url, server.token) as c:
            await c.start()
            for _ in range(300):
                kind = rng.random()
                if kind < 0.3:
                    await c.ws.send(rng.randbytes(rng.randrange(0, 1500)))
                elif kind < 0.5:
                    await c.ws.send("".join(chr(rng.randrange(32, 0x2FF)) for _ in range(40)))
                else:
                    payload = {
                        rng.choice(keys): rng.choice(values) for _ in range(rng.randrange(4))
                    }
                    seq = c.seq + 1 if rng.random() < 0.8 else rng.choice([0, -3, "1", None])
                    c.seq += 1
                    message = {"event": rng.choice(events), "seq": seq, "payload": payload}
                    await c.ws.send(json.dumps(message))
            await c.send("session.end")
            code = await c.close_code(timeout_s=20)
        assert code == 1000
        errors = [m["payload"] for m in c.received if m["event"] == "error"]
        assert errors and not any(error["fatal"] for error in errors)
        assert all(error["code"] != "internal" for error in errors)
        # A normal session still works afterwards.
        async with client(server.url, server.token) as c:
            await c.start()
            await c.send("text.input", {"text": "hello"})
            assert (await c.until("turn.done"))[-1]["payload"]["reply_text"] == "Okay."


@bounded(30)
async def test_a_server_shutdown_ends_open_sessions(tmp_path: Path) -> None:
    fakes = Fakes(llm=FakeLLM(LONG_REPLY), tts=FakeTTS(ms_per_word=300))
    async with serve(tmp_path, fakes, shutdown_grace_s=0.2) as server:
        ws = await connect(
            server.url, additional_headers={"Authorization": f"Bearer {server.token}"}, proxy=None
        )
        c = SpecClient(ws)
        await c.start()
        await c.send("text.input", {"text": "Count for me."})
        await c.until("tts.audio")
    code = await c.close_code()
    await ws.close()
    assert code in {1001, 1012}  # ours after session.end, or uvicorn's "service restart"


# -- the reference client ---------------------------------------------------------------------


@bounded(60)
async def test_run_client_prints_events_and_writes_the_reply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = tmp_path / "question.wav"
    write_wav(wav, concat(tone(600, 22_050), silence(300, 22_050)), 22_050)
    reply = tmp_path / "reply.wav"
    async with serve(tmp_path) as server:
        ok = await run_client(server.url, wav, reply, server.token, realtime=False)
        refused = await run_client(server.url, wav, None, "wrong", realtime=False)
    out, err = capsys.readouterr()
    assert ok == 0, err
    assert refused == 2 and ("4401" in err or "unauthorized" in err), err
    assert "asr.final" in out and "turn.done" in out and "stt_ms" in out
    samples, rate = read_wav(reply)
    assert rate == 24_000 and len(samples) == pytest.approx(2_400, abs=10)  # "Okay.": 100 ms


# -- real speech -----------------------------------------------------------------------------


@pytest.mark.models
@bounded(180)
async def test_a_real_question_over_the_relay_is_answered_and_spoken(
    tmp_path: Path, real_engines: Engines, real_settings: Settings
) -> None:
    from voxgate.cli import SAMPLE_QUESTION

    settings = real_settings.model_copy(update={"data_dir": tmp_path})
    store = await open_store(tmp_path)
    _, token = await store.devices.add("kitchen")
    samples, rate = read_wav(SAMPLE_QUESTION)
    async with running_server(settings, real_engines, store) as address:
        result = await converse(
            f"ws://{address}/v1/relay", samples, rate, token=token, realtime=False
        )
    await store.close()
    assert {"capital", "france"} <= set(normalize_words(result.transcript)), result.transcript
    assert result.turn_done and result.reply_text.strip()
    assert result.sample_rate_hz == 24_000
    audio = int16_to_float(resample(result.pcm, result.sample_rate_hz, 16_000))
    heard_back = await real_engines.stt.transcribe(audio)
    assert character_error_rate(result.reply_text, heard_back) <= 0.25, (
        result.reply_text,
        heard_back,
    )
    assert result.timings["stt_ms"] and result.timings["tts_first_audio_ms"]


@bounded(30)
@pytest.mark.parametrize(
    ("reply", "spoken"),
    [(["Bye now.", ToolCall("end_session")], "Bye now."), ([ToolCall("end_session")], "Goodbye!")],
)
async def test_the_assistant_ends_the_session_when_its_llm_calls_end_session(
    tmp_path: Path, reply: list[object], spoken: str
) -> None:
    fakes = Fakes(llm=FakeLLM(reply))
    async with serve(tmp_path, fakes) as server, client(server.url, server.token) as c:
        await c.start()
        await c.send("text.input", {"text": "That's all, goodbye."})
        seen = await c.until("session.end")
        code = await c.close_code()
    events = [message["event"] for message in seen]
    done = seen[events.index("turn.done")]["payload"]
    assert done["reply_text"] == spoken
    assert events.index("turn.done") < events.index("session.end")
    assert seen[-1]["payload"]["reason"] == "assistant"
    assert code == 1000


@bounded(30)
async def test_a_stored_characters_prompt_and_voice_are_used(tmp_path: Path) -> None:
    from voxgate.store.records import Character

    fakes = Fakes(llm=FakeLLM(["Arr."]))
    async with serve(tmp_path, fakes) as server:
        await server.store.characters.save(
            Character(slug="pirate", name="Pete", system_prompt="Talk like a pirate.", voice="v9")
        )
        async with client(server.url, server.token) as c:
            ready = await c.start(character={"id": "pirate"}, greeting=False)
            await c.send("text.input", {"text": "Hello"})
            await c.until("turn.done")
        async with client(server.url, server.token) as c:
            await c.send("session.start", {"character": {"id": "nobody"}})
            refused = await c.next()
            code = await c.close_code()
    assert ready["character"]["name"] == "Pete"
    assert fakes.llm.calls[0][0].content == "Talk like a pirate."
    assert set(fakes.tts.voices) == {"v9"}
    assert refused["event"] == "error" and "no character 'nobody'" in refused["payload"]["message"]
    assert code == 4400


def test_a_connection_while_shutting_down_is_told_and_closed(tmp_path: Path) -> None:
    """Refused before authenticating (so before the connection's rules exist): the refusal is
    still a numbered message and a 1013, not a crash in the ASGI app."""
    settings = server_settings(tmp_path)
    engines = Fakes().engines()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = await open_store(tmp_path)  # in the test client's own event loop
        app.state.ctx = ServerContext(settings, engines, store)
        yield
        await store.close()

    app = Starlette(routes=relay_transport.routes(settings), lifespan=lifespan)
    try:
        with TestClient(app) as http:
            app.state.ctx.shutting_down.set()
            with http.websocket_connect("/v1/relay") as ws:
                told = ws.receive_json()
                with pytest.raises(WebSocketDisconnect) as closed:
                    ws.receive_text()
    finally:
        engines.close()
    assert told["seq"] == 1 and told["event"] in {"error", "session.end"}, told
    assert "shutting down" in json.dumps(told["payload"])
    assert closed.value.code == 1013
