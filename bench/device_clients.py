"""Device clients for the device benchmark, each written from its protocol's spec: the relay
(docs/protocols/relay.md, PCM16 both ways), ElatoAI's firmware (shared/protocols/elato.md:
``/ws/esp32``, 64-byte PCM16 frames up, Opus down, no VAD on the device) and the
voice-assistant-proxy device's ``/ws`` (shared/protocols/assistant-proxy.md: 100 ms PCM16
frames up, 24 kHz PCM16 down, no end-of-reply marker) and its ``POST /v1/audio`` (hold-to-talk:
100 ms chunks, the reply streamed in the answer to the final one).

Each behaves as the device and its user would: the microphone streams at real-time pace (speech
when the person talks, silence otherwise; ElatoAI's firmware sends nothing while it is not
listening), the reply is "played" at real time from its first byte, and the person speaks again
:data:`REPLY_GAP_S` after the reply has finished playing (ElatoAI: and once the firmware listens
again, 1 s after RESPONSE.COMPLETE).

Every instant is ``time.monotonic()`` at the client. The end of the user's speech is the instant
the last voiced sample of the clip (found from the clip, bench/voicing.py) was spoken: the mic's
clock says when each sample was captured, and the frame holding it goes out when it is full, as
on a device, so the frame's own duration is part of what the device sees.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import opuslib
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.conversations import RATE_HZ, Utterance

REPLY_GAP_S = 0.5
"""A person answers this long after the reply has stopped playing."""
TURN_TIMEOUT_S = 60.0
ELATO_LISTEN_DELAY_S = 1.0
"""ElatoAI's firmware listens again this long after RESPONSE.COMPLETE."""
PROXY_RELEASE_S = 0.2
"""On ``POST /v1/audio`` the person releases the talk button this long after the voice ends."""
PROXY_QUIET_S = 1.0
"""``/ws`` has no end-of-reply marker: the reply is over once it has played out and no audio
came for this long."""


@dataclass
class TurnRecord:
    """What the device saw in one turn (instants: ``time.monotonic()``)."""

    index: int
    """1 for the first question of the conversation."""
    text: str
    speech_end_t: float = 0.0
    turn_end_signal_t: float | None = None
    """The server's "your turn is over" at the device: relay ``speech.stopped``, ElatoAI
    ``AUDIO.COMMITTED``, ``/ws`` ``speech_end``."""
    first_audio_t: float | None = None
    reply_audio_s: float = 0.0
    played_out_t: float = 0.0
    heard: str | None = None
    """What the server transcribed (relay only: the others do not say)."""
    reply_text: str | None = None
    errors: list[str] = field(default_factory=list)

    def first_audio_ms(self) -> float | None:
        if self.first_audio_t is None:
            return None
        return (self.first_audio_t - self.speech_end_t) * 1000

    def turn_end_signal_ms(self) -> float | None:
        if self.turn_end_signal_t is None:
            return None
        return (self.turn_end_signal_t - self.speech_end_t) * 1000

    def play(self, seconds: float) -> None:
        """Reply audio of ``seconds`` arrived now: it plays after what is queued."""
        now = time.monotonic()
        if self.first_audio_t is None:
            self.first_audio_t = now
        self.played_out_t = max(self.played_out_t, now) + seconds
        self.reply_audio_s += seconds


class Microphone:
    """A device microphone at real-time pace: one frame of ``frame_samples`` per frame of audio
    time (``frames_per_send`` of them at once, to spare the client's CPU), speech when the person
    talks, silence otherwise. Muted, it still captures but sends nothing."""

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        frame_samples: int,
        *,
        frames_per_send: int = 1,
        muted: bool = False,
    ) -> None:
        self._send = send
        self._frame = frame_samples
        self._chunk = frame_samples * frames_per_send
        self.muted = muted
        self._queue = np.zeros(0, dtype=np.int16)
        self._captured = 0
        self._start = time.monotonic()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def say(self, utterance: Utterance) -> float:
        """Speak ``utterance``; returns once all of it has gone out, with the instant its
        voice ended."""
        begin = self._captured + len(self._queue)
        self._queue = np.concatenate([self._queue, utterance.samples])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((begin + len(utterance.samples), done))
        await done
        return self._start + (begin + utterance.end_sample) / RATE_HZ

    async def run(self) -> None:
        try:
            await self._capture()
        finally:
            # The connection is gone (or the device hung up): whoever waits to have spoken
            # hears about it from the device, not from a microphone that stopped.
            for _, waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters.clear()

    async def _capture(self) -> None:
        self._start = time.monotonic()
        while True:
            due = self._start + (self._captured + self._chunk) / RATE_HZ
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            audio = np.zeros(self._chunk, dtype=np.int16)
            taken = self._queue[: self._chunk]
            audio[: len(taken)] = taken
            self._queue = self._queue[len(taken) :]
            self._captured += self._chunk
            if not self.muted:
                for offset in range(0, self._chunk, self._frame):
                    await self._send(audio[offset : offset + self._frame].astype("<i2").tobytes())
            for waiter in [w for w in self._waiters if w[0] <= self._captured]:
                self._waiters.remove(waiter)
                if not waiter[1].done():
                    waiter[1].set_result(None)


async def sleep_until(instant: float) -> None:
    await asyncio.sleep(max(0.0, instant - time.monotonic()))


class Device:
    """One device, one connection, one conversation. Subclasses open the connection, read the
    server's messages into :attr:`current` and set :attr:`reply_over` when a reply ends."""

    protocol = ""

    def __init__(self) -> None:
        self.current = TurnRecord(0, "(greeting)")
        self.reply_over = asyncio.Event()
        self.ready_to_talk_t = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._ws: ClientConnection | None = None
        self.mic: Microphone | None = None
        self.closed: str | None = None
        """Why the conversation ended early (the server closed, or a reply never came)."""

    async def open(self) -> None:
        raise NotImplementedError

    async def _read(self, message: str | bytes) -> None:
        raise NotImplementedError

    async def _reply_end(self) -> None:
        """Returns when the current reply is over (after its first audio, or an error)."""
        await self.reply_over.wait()

    def start(self, ws: ClientConnection, mic: Microphone) -> None:
        self._ws, self.mic = ws, mic
        self._tasks = [asyncio.create_task(mic.run()), asyncio.create_task(self._reader(ws))]

    async def _reader(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                await self._read(message)
        except ConnectionClosed:
            pass
        self.closed = f"the server closed the connection ({ws.close_code} {ws.close_reason})"
        self.current.errors.append(self.closed)
        self.reply_over.set()

    async def turn(self, record: TurnRecord, utterance: Utterance) -> TurnRecord:
        """One exchange: wait as the person would, speak, wait for the reply to play out."""
        assert self.mic is not None
        await sleep_until(self.ready_to_talk_t)
        if self.closed:
            record.errors.append(self.closed)
            return record
        self.current, self.reply_over = record, asyncio.Event()
        record.speech_end_t = await self.mic.say(utterance)
        try:
            async with asyncio.timeout(TURN_TIMEOUT_S):
                await self._reply_end()
        except TimeoutError:
            # A reply may still come; it would be taken for the next turn's. The conversation
            # ends here instead.
            self.closed = f"no reply within {TURN_TIMEOUT_S:.0f} s"
            record.errors.append(self.closed)
        self.ready_to_talk_t = max(self.ready_to_talk_t, record.played_out_t + REPLY_GAP_S)
        return record

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()


class RelayDevice(Device):
    protocol = "relay"

    def __init__(self, address: str, token: str) -> None:
        super().__init__()
        self._url = f"ws://{address}/v1/relay"
        self._token = token
        self._seq = 0

    async def open(self) -> None:
        ws = await connect(
            self._url, additional_headers={"Authorization": f"Bearer {self._token}"}, max_size=None
        )
        self._seq += 1
        start = {"greeting": False, "input": {"sample_rate_hz": RATE_HZ}}
        await ws.send(json.dumps({"event": "session.start", "seq": self._seq, "payload": start}))
        ready = json.loads(await ws.recv())
        if ready["event"] != "session.ready":
            raise RuntimeError(f"relay: expected session.ready, got {ready}")
        self.start(ws, Microphone(ws.send, RATE_HZ * 20 // 1000))  # 20 ms frames

    async def _read(self, message: str | bytes) -> None:
        record = self.current
        if isinstance(message, bytes):
            record.play(len(message) / 2 / self._output_rate)
            return
        event, payload = _relay_event(message)
        if event == "tts.audio":
            self._output_rate = int(payload["sample_rate_hz"])
        elif event == "speech.stopped" and record.turn_end_signal_t is None:
            record.turn_end_signal_t = time.monotonic()
        elif event == "asr.final":
            record.heard = payload.get("text")
        elif event == "turn.done":
            record.reply_text = payload.get("reply_text")
            self.reply_over.set()
        elif event == "error":
            record.errors.append(str(payload.get("code")))
            if payload.get("fatal") or payload.get("code") == "no_speech":
                self.reply_over.set()

    _output_rate = 24_000


def _relay_event(message: str) -> tuple[str, dict[str, Any]]:
    data = json.loads(message)
    return str(data["event"]), dict(data.get("payload") or {})


class ElatoDevice(Device):
    protocol = "elato"
    frame_samples = 32
    """The firmware copies 64 bytes (32 samples, 2 ms) at a time."""
    frames_per_send = 10

    def __init__(self, address: str, mac: str, token: str | None = None) -> None:
        super().__init__()
        self._address = address
        self._mac = mac
        self.token = token
        """Fetched once while pairing, then kept (as the firmware keeps it) for reconnects."""
        self._decoder = opuslib.Decoder(48_000, 1)  # the firmware decodes at 48 kHz

    async def open(self) -> None:
        if self.token is None:
            async with httpx.AsyncClient(
                base_url=f"http://{self._address}", trust_env=False
            ) as http:
                response = await http.get(
                    "/api/generate_auth_token", params={"macAddress": self._mac}
                )
            response.raise_for_status()
            self.token = str(response.json()["token"])
        headers = {
            "Authorization": f"Bearer {self.token}",
            "X-Device-Mac": self._mac,
            "X-Wifi-Rssi": "-50",
        }
        ws = await connect(
            f"ws://{self._address}/ws/esp32", additional_headers=headers, compression=None
        )
        auth = json.loads(await ws.recv())
        if auth.get("type") != "auth":
            raise RuntimeError(f"elato: expected auth, got {auth}")
        mic = Microphone(
            ws.send, self.frame_samples, frames_per_send=self.frames_per_send, muted=True
        )
        self.start(ws, mic)
        # The session opens with a greeting; the person listens to it first.
        async with asyncio.timeout(TURN_TIMEOUT_S):
            await self.reply_over.wait()
        self.ready_to_talk_t = max(self.ready_to_talk_t, self.current.played_out_t + REPLY_GAP_S)

    async def _read(self, message: str | bytes) -> None:
        record = self.current
        if isinstance(message, bytes):
            pcm = self._decoder.decode(message, 5_760)
            record.play(len(pcm) / 2 / 48_000)
            return
        msg = json.loads(message).get("msg")
        if msg == "AUDIO.COMMITTED":
            record.turn_end_signal_t = record.turn_end_signal_t or time.monotonic()
            if self.mic is not None:
                self.mic.muted = True
        elif msg in ("RESPONSE.COMPLETE", "RESPONSE.ERROR"):
            if msg == "RESPONSE.ERROR":
                record.errors.append("RESPONSE.ERROR")
            listen_t = time.monotonic() + ELATO_LISTEN_DELAY_S
            self.ready_to_talk_t = max(self.ready_to_talk_t, listen_t)
            asyncio.get_running_loop().call_later(ELATO_LISTEN_DELAY_S, self._listen)
            self.reply_over.set()
        elif msg == "SESSION.END":
            record.errors.append("SESSION.END")
            self.reply_over.set()

    def _listen(self) -> None:
        if self.mic is not None:
            self.mic.muted = False


class ProxyWsDevice(Device):
    protocol = "proxy_ws"

    def __init__(self, address: str, token: str) -> None:
        super().__init__()
        self._url = f"ws://{address}/ws"
        self._token = token
        self._last_audio_t = 0.0

    async def open(self) -> None:
        ws = await connect(self._url, additional_headers={"X-Assistant-Token": self._token})
        self.start(ws, Microphone(ws.send, RATE_HZ // 10))  # 100 ms frames

    async def _read(self, message: str | bytes) -> None:
        record = self.current
        if isinstance(message, bytes):
            self._last_audio_t = time.monotonic()
            record.play(len(message) / 2 / 24_000)
        elif json.loads(message).get("type") == "speech_end":
            record.turn_end_signal_t = record.turn_end_signal_t or time.monotonic()

    async def _reply_end(self) -> None:
        record = self.current
        while not self.closed:
            now = time.monotonic()
            if (
                record.first_audio_t is not None
                and now >= record.played_out_t
                and now - self._last_audio_t >= PROXY_QUIET_S
            ):
                return
            await asyncio.sleep(0.05)


class ProxyHttpDevice(Device):
    """Hold-to-talk over ``POST /v1/audio``: the device, not the server, ends the turn (the
    final chunk, sent when the button is released)."""

    protocol = "proxy_http"
    CHUNK = RATE_HZ // 10

    def __init__(self, address: str, token: str, session_id: str) -> None:
        super().__init__()
        self._http = httpx.AsyncClient(
            base_url=f"http://{address}",
            headers={"X-Assistant-Token": token},
            trust_env=False,
            timeout=TURN_TIMEOUT_S,
        )
        self._session_id = session_id

    async def open(self) -> None:
        pass

    async def turn(self, record: TurnRecord, utterance: Utterance) -> TurnRecord:
        await sleep_until(self.ready_to_talk_t)
        release = utterance.end_sample + round(PROXY_RELEASE_S * RATE_HZ)
        chunks = -(-release // self.CHUNK)
        audio = np.zeros(chunks * self.CHUNK, dtype=np.int16)
        spoken = utterance.samples[: len(audio)]
        audio[: len(spoken)] = spoken
        start = time.monotonic()
        record.speech_end_t = start + utterance.end_sample / RATE_HZ
        try:
            for index in range(chunks):
                await sleep_until(start + (index + 1) * self.CHUNK / RATE_HZ)
                piece = audio[index * self.CHUNK : (index + 1) * self.CHUNK]
                response = await self._http.post("/v1/audio", json=self._body(index, piece))
                response.raise_for_status()
            final = self._body(chunks, audio[:0], final=True)
            async with self._http.stream("POST", "/v1/audio", json=final) as response:
                record.turn_end_signal_t = time.monotonic()
                response.raise_for_status()
                async for body in response.aiter_bytes():
                    record.play(len(body) / 2 / 24_000)
        except httpx.HTTPError as exc:
            record.errors.append(f"{type(exc).__name__}: {exc}")
        if record.first_audio_t is None and not record.errors:
            record.errors.append("the reply had no audio")
        self.ready_to_talk_t = max(self.ready_to_talk_t, record.played_out_t + REPLY_GAP_S)
        return record

    def _body(self, index: int, pcm: np.ndarray, *, final: bool = False) -> dict[str, Any]:
        return {
            "session_id": self._session_id,
            "chunk_index": index,
            "pcm_base64": base64.b64encode(pcm.astype("<i2").tobytes()).decode(),
            "is_final": final,
        }

    async def close(self) -> None:
        await self._http.aclose()
