"""The reference client of the relay protocol (``docs/protocols/relay.md``): one spoken turn.

``voxgate client ws://HOST:8080/v1/relay --wav QUESTION.wav -o REPLY.wav --token TOKEN`` sends the
WAV as a device would (20 ms PCM16 frames at 16 kHz, at real-time pace, then 1.5 s of silence),
prints every event with its time since the end of the sent speech, and writes the reply audio.

With ``--wake-word hey_jarvis`` the session is hands-free (protocol 1.1): the WAV must say the
wake word first ("Hey Jarvis, what is two plus three?"); nothing before it is heard.

It is written against the schema with plain JSON, as a device would be, not with the server's codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from voxgate.core.audio import read_wav, resample, write_wav
from voxgate.core.capabilities import Int16Array
from voxgate.core.errors import VoxgateError

INPUT_RATE_HZ = 16_000
OUTPUT_RATE_HZ = 24_000
FRAME_MS = 20
TRAILING_SILENCE_MS = 1_500
CLOSE_UNAUTHORIZED = 4401
_TURN_ENDING_ERRORS = frozenset({"no_speech", "stt_failed", "bad_audio"})

OnEvent = Callable[[float, str, dict[str, Any]], None]
"""Called for each server event: seconds since the end of the sent speech, name, payload."""


class RelayClientError(Exception):
    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ClientResult:
    session_id: str = ""
    transcript: str = ""
    reply_text: str = ""
    audio: bytearray = field(default_factory=bytearray)
    sample_rate_hz: int = OUTPUT_RATE_HZ
    timings: dict[str, Any] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    """(code, message) of each ``error`` event."""
    turn_done: bool = False

    @property
    def pcm(self) -> Int16Array:
        return np.frombuffer(bytes(self.audio), dtype="<i2").astype(np.int16)


class _Conversation:
    """One connection's state: outgoing ``seq``, what came back, and when."""

    def __init__(self, ws: ClientConnection, on_event: OnEvent | None, speech_s: float) -> None:
        self.ws = ws
        self.on_event = on_event
        self.result = ClientResult()
        self.seq = 0
        self.server_seq = 0
        # Until the audio goes out: where the end of the speech will roughly be.
        self.speech_end_at = asyncio.get_running_loop().time() + speech_s
        self.done = asyncio.Event()
        self._audio_expected = 0

    async def send(self, event: str, payload: dict[str, Any] | None = None) -> None:
        self.seq += 1
        await self.ws.send(json.dumps({"event": event, "seq": self.seq, "payload": payload or {}}))

    async def receive(self) -> tuple[str, dict[str, Any]]:
        """The next text event (binary audio is taken in along the way)."""
        while True:
            frame = await self.ws.recv()
            if isinstance(frame, bytes):
                if len(frame) != self._audio_expected:
                    raise RelayClientError("binary frame without a matching tts.audio header")
                self.result.audio += frame
                self._audio_expected = 0
                continue
            message = json.loads(frame)
            name, seq = message["event"], message["seq"]
            payload: dict[str, Any] = message.get("payload", {})
            if seq != self.server_seq + 1:
                print(f"warning: server seq {seq} after {self.server_seq}", file=sys.stderr)
            self.server_seq = seq
            self._take(name, payload)
            return name, payload

    def _take(self, name: str, payload: dict[str, Any]) -> None:
        result = self.result
        result.events.append(name)
        loop_time = asyncio.get_running_loop().time()
        if self.on_event is not None:
            self.on_event(loop_time - self.speech_end_at, name, payload)
        if name == "asr.final":
            result.transcript = payload["text"]
        elif name == "tts.audio":
            self._audio_expected = payload["bytes"]
            result.sample_rate_hz = payload["sample_rate_hz"]
        elif name == "turn.done":
            result.reply_text = payload["reply_text"]
            result.timings = payload["timings"]
            result.turn_done = True
            self.done.set()
        elif name == "error":
            result.errors.append((payload["code"], payload["message"]))
            if payload["code"] in _TURN_ENDING_ERRORS and not result.audio:
                self.done.set()
        elif name == "session.end":
            self.done.set()

    async def read_all(self) -> None:
        while True:
            await self.receive()

    async def stream(self, samples: Int16Array, realtime: bool) -> None:
        frame = INPUT_RATE_HZ * FRAME_MS // 1000
        silence = np.zeros(INPUT_RATE_HZ * TRAILING_SILENCE_MS // 1000, dtype=np.int16)
        audio = np.concatenate([samples, silence]).astype("<i2")
        loop = asyncio.get_running_loop()
        started = loop.time()
        speech_frames = -(-len(samples) // frame)
        # Events print relative to the end of the speech: where it will be, when paced.
        self.speech_end_at = started + (len(samples) / INPUT_RATE_HZ if realtime else 0.0)
        for index, offset in enumerate(range(0, len(audio), frame)):
            if index == speech_frames and not realtime:
                self.speech_end_at = loop.time()
            await self.ws.send(audio[offset : offset + frame].tobytes())
            if realtime:
                await asyncio.sleep(max(0.0, started + (index + 1) * FRAME_MS / 1000 - loop.time()))


async def converse(
    url: str,
    samples: Int16Array,
    sample_rate_hz: int,
    *,
    token: str | None,
    realtime: bool = True,
    on_event: OnEvent | None = None,
    timeout_s: float = 120.0,
    wake_word: str | None = None,
) -> ClientResult:
    """One spoken turn over the relay protocol; raises RelayClientError if it cannot be had.
    ``wake_word``: the session listens for it first (one turn after it)."""
    samples = resample(samples.astype(np.int16), sample_rate_hz, INPUT_RATE_HZ)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        async with connect(url, additional_headers=headers, proxy=None, max_size=None) as ws:
            chat = _Conversation(ws, on_event, len(samples) / INPUT_RATE_HZ if realtime else 0.0)
            try:
                async with asyncio.timeout(timeout_s):
                    await _turn(chat, samples, realtime, wake_word)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                reason = exc.rcvd.reason if exc.rcvd is not None else ""
                if not reason and chat.result.errors:
                    reason = chat.result.errors[-1][1]
                exit_code = 2 if code == CLOSE_UNAUTHORIZED else 1
                raise RelayClientError(
                    f"the server closed the connection (code {code}: {reason or 'no reason'})",
                    exit_code=exit_code,
                ) from None
            except TimeoutError:
                raise RelayClientError(f"no complete reply within {timeout_s:.0f} s") from None
            return chat.result
    except (OSError, InvalidHandshake, InvalidURI) as exc:
        raise RelayClientError(f"cannot connect to {url}: {exc}") from None


async def _turn(
    chat: _Conversation, samples: Int16Array, realtime: bool, wake_word: str | None
) -> None:
    start: dict[str, Any] = {
        "input": {"audio_format": "pcm16", "sample_rate_hz": INPUT_RATE_HZ},
        "output": {"audio_format": "pcm16", "sample_rate_hz": OUTPUT_RATE_HZ},
        "turn_detection": "server_vad",
        "greeting": False,
    }
    if wake_word is not None:
        start["listening"] = {"mode": "wake_word", "wake_word": wake_word, "follow_up": "turn"}
    await chat.send("session.start", start)
    name, payload = await chat.receive()
    if name != "session.ready":
        code = payload.get("code")
        raise RelayClientError(
            f"session refused: {code}: {payload.get('message')}",
            exit_code=2 if code == "unauthorized" else 1,
        )
    chat.result.session_id = payload["session_id"]
    chat.result.sample_rate_hz = payload["output"]["sample_rate_hz"]
    reader = asyncio.create_task(chat.read_all())
    try:
        await chat.stream(samples, realtime)
        if "speech.started" not in chat.result.events:
            # The VAD may still be catching up with the last frames.
            await asyncio.sleep(0.5)
        if "speech.started" not in chat.result.events and not reader.done():
            if wake_word is not None and "wake.detected" not in chat.result.events:
                raise RelayClientError(f"the server did not hear the wake word {wake_word!r}")
            raise RelayClientError("the server heard no speech in the clip")
        done = asyncio.create_task(chat.done.wait())
        await asyncio.wait({reader, done}, return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        if reader.done():
            reader.result()  # raises why the connection ended
        await chat.send("session.end")
        # The server answers session.end and closes; the reply is complete either way.
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(5):
                await reader
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


def _print_event(seconds: float, name: str, payload: dict[str, Any]) -> None:
    detail = ""
    if name in {"asr.partial", "asr.final", "llm.token"}:
        detail = json.dumps(payload["text"], ensure_ascii=False)
    elif name == "tts.audio":
        detail = f"#{payload['sentence_index']} {payload['bytes']} bytes"
        if payload["sentence_start"]:
            detail += " " + json.dumps(payload["sentence_text"], ensure_ascii=False)
    elif name == "reply.interrupted":
        detail = json.dumps(payload["heard_text"], ensure_ascii=False)
    elif name == "error":
        detail = f"{payload['code']}: {payload['message']}"
    elif name == "turn.done":
        detail = json.dumps(payload["reply_text"], ensure_ascii=False)
    elif name == "wake.detected":
        detail = f"{payload['wake_word']} at {payload['at_ms']:.0f} ms"
    elif name == "session.ready":
        detail = f"protocol {payload['protocol_version']}, session {payload['session_id']}"
    print(f"{seconds:+.3f}s {name} {detail}".rstrip())


async def run_client(
    url: str,
    wav: Path,
    output: Path | None,
    token: str | None,
    realtime: bool = True,
    wake_word: str | None = None,
) -> int:
    """``voxgate client``: 0 when a reply came back, 2 when the token was refused, 1 otherwise."""
    try:
        samples, rate = read_wav(wav)
        result = await converse(
            url,
            samples,
            rate,
            token=token,
            realtime=realtime,
            on_event=_print_event,
            wake_word=wake_word,
        )
    except VoxgateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except RelayClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if not result.turn_done:
        errors = "; ".join(f"{code}: {message}" for code, message in result.errors)
        print(f"error: no reply ({errors or 'the session ended'})", file=sys.stderr)
        return 1
    print("timings (ms):")
    for stage, value in result.timings.items():
        if value is not None and stage != "speculative":
            print(f"  {stage:<32} {value:8.1f}")
    if output is not None:
        write_wav(output, result.pcm, result.sample_rate_hz)
        seconds = len(result.pcm) / result.sample_rate_hz
        print(f"reply audio: {output} ({seconds:.2f} s at {result.sample_rate_hz} Hz)")
    return 0


def client_command(
    url: Annotated[str, typer.Argument(help="The relay URL, e.g. ws://127.0.0.1:8080/v1/relay.")],
    wav: Annotated[Path, typer.Option("--wav", help="A 16-bit WAV with the question.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the reply audio here.")
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="VOXGATE_TOKEN", help="The device token.")
    ] = None,
    realtime: Annotated[
        bool, typer.Option(help="Send the audio at real-time pace, as a device would.")
    ] = True,
    wake_word: Annotated[
        str | None,
        typer.Option(help="Hands-free: the server waits for this wake word (hey_jarvis...)."),
    ] = None,
) -> None:
    """Talk to a voxgate server over the relay protocol: one spoken turn from a WAV file."""
    code = asyncio.run(run_client(url, wav, output, token, realtime, wake_word))
    if code:
        raise typer.Exit(code)
