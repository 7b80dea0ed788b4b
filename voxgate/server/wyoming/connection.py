"""One Wyoming TCP connection: read, turn bytes into requests (the codec), answer each in turn.

Requests are answered one at a time, in order, as the reference servers do: a client waits for a
transcript before its next utterance, and the text of a streamed synthesis queues in the socket
while a sentence is spoken. A broken rule, a limit, a failed engine end the connection with an
``error`` event; a client that stops reading is dropped after ``server.send_timeout_s``. Nothing
of one connection reaches another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

import numpy as np

from voxgate.core.audio import int16_to_float, resample
from voxgate.core.capabilities import Int16Array
from voxgate.core.errors import ErrorCode, ProviderError, UnavailableError, VoxgateError
from voxgate.core.threads import close_stream
from voxgate.core.usage import UsageMeter, metering
from voxgate.pipeline.sentences import SentenceSplitter
from voxgate.protocols import wyoming
from voxgate.protocols.wyoming import WyomingProtocolError
from voxgate.protocols.wyoming_requests import (
    AudioBegun,
    AudioData,
    AudioEnded,
    Describe,
    Ping,
    Request,
    SynthesisBegun,
    SynthesisEnded,
    SynthesisText,
    Synthesize,
    WyomingServerProtocol,
)
from voxgate.server.wyoming.service import PROTOCOL, Offer, WyomingService
from voxgate.server.wyoming.wake import NoSuchWakeWord, WakeDetect, choose
from voxgate.store.records import Device

logger = logging.getLogger(__name__)

READ_BYTES = 64 * 1024
LINGER_S = 1.0
LINGER_READS = 16
CHUNK_MS = 100
"""Synthesised audio goes out in chunks this long at most (the reference sends ~46 ms)."""


class Ended(Exception):
    """End the connection: with an ``error`` event (``code``, ``text``) unless ``code`` is None."""

    def __init__(self, code: str | None, text: str = "") -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class SlowClient(Exception):
    """The client read nothing for ``server.send_timeout_s``."""


class WyomingConnection:
    def __init__(
        self,
        service: WyomingService,
        offer: Offer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.service = service
        self.offer = offer
        self.reader = reader
        self.writer = writer
        self.protocol = WyomingServerProtocol(service.limits, service.request_limits)
        self.device: Device | None = None
        self._metrics = service.ctx.metrics
        self._send_timeout_s = service.ctx.settings.server.send_timeout_s
        # One utterance being heard, and one text being spoken (streamed in).
        self._audio: list[Int16Array] = []
        self._audio_rate_hz = 16_000
        self._language: str | None = None
        self._splitter: SentenceSplitter | None = None
        self._voice: str | None = None
        self._wake: WakeDetect | None = None
        self._audio_open = False
        self._holder = secrets.token_hex(8)
        self._stream_meter = UsageMeter()
        self.live = False
        """Admitted and not yet ended (what shutdown and tests look at)."""
        self.busy = False
        """A request is being answered (or its audio is coming): shutdown waits for it."""

    async def run(self) -> None:
        ctx = self.service.ctx
        peer = self.writer.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else None
        service = self.service
        service.open_connections += 1
        counted = False
        try:
            if not service.allowed(host):
                raise Ended(ErrorCode.UNAUTHORIZED, f"{host} is not in wyoming.allowed_networks")
            if service.open_connections > service.settings.max_connections:
                raise Ended(ErrorCode.RATE_LIMITED, "too many Wyoming connections open")
            if ctx.shutting_down.is_set():
                raise Ended(ErrorCode.SHUTTING_DOWN, "the server is shutting down")
            try:
                self.device = await service.device()
            except UnavailableError as exc:
                raise Ended(ErrorCode.UNAVAILABLE, str(exc)) from None
            # Online and a live session on the admin page (on every replica), like any device.
            await ctx.state.presence.arrive(self.device.id, self._holder)
            self._metrics.sessions.labels(PROTOCOL).inc()
            self._metrics.sessions_total.labels(PROTOCOL).inc()
            counted = self.live = True
            await self._serve()
        except Ended as ended:
            if ended.code is not None:
                logger.info("wyoming connection from %s ended: %s", host, ended.text)
                service.failed(self.device, ended.code, ended.text)
                with contextlib.suppress(SlowClient, OSError):
                    await self._send(wyoming.error(ended.text, ended.code))
                    await self._linger()
        except SlowClient:
            logger.info("wyoming client %s read nothing for %.0f s", host, self._send_timeout_s)
            service.failed(self.device, "slow_client", "the client stopped reading")
            self.writer.transport.abort()  # the buffers are full: a close would wait on them
        except (ConnectionError, OSError):
            logger.debug("wyoming client %s went away", host)
        except Exception:
            logger.exception("wyoming connection from %s failed", host)
            service.failed(self.device, ErrorCode.INTERNAL, "internal error")
        finally:
            service.open_connections -= 1
            self.live = False
            if counted:
                self._metrics.sessions.labels(PROTOCOL).dec()
                assert self.device is not None
                with contextlib.suppress(Exception):  # a shared state away: its TTL forgets us
                    await ctx.state.presence.leave(self.device.id, self._holder)
            self.writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self.writer.wait_closed()

    async def _serve(self) -> None:
        idle_s = self.service.settings.idle_timeout_s
        while True:
            try:
                async with asyncio.timeout(idle_s):
                    data = await self.reader.read(READ_BYTES)
            except TimeoutError:
                raise Ended(ErrorCode.BAD_REQUEST, f"nothing received for {idle_s:.0f} s") from None
            if not data:
                try:
                    self.protocol.receive_eof()
                except WyomingProtocolError as exc:
                    raise Ended(exc.code.value, str(exc)) from None
                return
            self._metrics.bytes_in.labels(PROTOCOL).inc(len(data))
            try:
                requests = self.protocol.receive_data(data)
            except WyomingProtocolError as exc:
                raise Ended(exc.code.value, str(exc)) from None
            self.busy = True
            for request in requests:
                await self._handle(request)
            self.busy = self._audio_open

    async def _linger(self) -> None:
        """After the error event: close our side and read what the client still sends, briefly.
        Closing with its bytes unread would reset the connection, and a reset can destroy the
        error event before the client reads it."""
        if self.writer.can_write_eof():
            self.writer.write_eof()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_S):
                for _ in range(LINGER_READS):
                    if not await self.reader.read(READ_BYTES):
                        return

    async def _send(self, data: bytes) -> None:
        self.writer.write(data)
        try:
            async with asyncio.timeout(self._send_timeout_s):
                await self.writer.drain()
        except TimeoutError:
            raise SlowClient from None
        self._metrics.bytes_out.labels(PROTOCOL).inc(len(data))

    # -- requests -----------------------------------------------------------------------------

    async def _handle(self, request: Request) -> None:
        match request:
            case Describe():
                await self._send(self.service.info(self.offer))
            case Ping(text):
                await self._send(wyoming.pong(text))
            case AudioBegun(purpose="detect", rate_hz=rate, names=names):
                self._wake = self._listen(rate, names)
            case AudioBegun(rate_hz=rate, language=language):
                self._offered(self.offer.stt, "speech to text")
                self._check_rate()
                self._audio, self._audio_rate_hz, self._language = [], rate, language
                self._audio_open = True
                await self._send(wyoming.transcript_start(language))
            case AudioData(samples=samples) if self._wake is not None:
                detection = await self._wake.hear(samples)
                if detection is not None:
                    stamp = self._wake.timestamp_ms(detection)
                    await self._send(wyoming.detection(detection.wake_word, stamp))
            case AudioData(samples=samples):
                self._audio.append(samples)
            case AudioEnded(purpose="detect"):
                heard = self._wake is not None and self._wake.detected
                self._wake = None
                if not heard:
                    await self._send(wyoming.not_detected())
            case AudioEnded():
                self._audio_open = False
                await self._transcribe()
            case Synthesize(text=text, voice=voice):
                self._offered(self.offer.tts, "text to speech")
                self._check_rate()
                await self._speak_all(text, voice)
            case SynthesisBegun(voice=voice):
                self._offered(self.offer.tts, "text to speech")
                self._check_rate()
                self._splitter, self._voice = SentenceSplitter(), voice
                self._stream_meter = UsageMeter()
            case SynthesisText(text=text):
                assert self._splitter is not None  # the codec saw synthesize-start
                await self._speak_sentences(self._splitter.push(text), self._voice)
            case SynthesisEnded():
                if self._splitter is not None:
                    await self._speak_sentences(self._splitter.flush(), self._voice)
                    assert self.device is not None
                    self.service.bill(self.device, self._stream_meter)  # one request
                self._splitter = None
                await self._send(wyoming.synthesize_stopped())

    def _listen(self, rate_hz: int, names: tuple[str, ...] | None) -> WakeDetect:
        engine = self.service.ctx.engines.wake_word
        if engine is None or not self.offer.stt:
            raise Ended(ErrorCode.BAD_REQUEST, "this port does not serve wake-word detection")
        self._check_rate()
        default = self.service.ctx.settings.wake_word.wake_word
        try:
            return WakeDetect(engine, choose(engine, names, default), rate_hz)
        except NoSuchWakeWord as exc:
            raise Ended(ErrorCode.BAD_REQUEST, str(exc)) from None

    def _offered(self, offered: bool, what: str) -> None:
        if not offered:
            raise Ended(ErrorCode.BAD_REQUEST, f"this port does not serve {what}")

    def _check_rate(self) -> None:
        assert self.device is not None
        wait_s = self.service.allow_request(self.device)
        if wait_s is not None:
            raise Ended(
                ErrorCode.RATE_LIMITED,
                f"over wyoming.requests_per_minute; retry in {wait_s:.0f} s",
            )

    async def _transcribe(self) -> None:
        assert self.device is not None
        stt = self.service.ctx.engines.stt
        pcm = np.concatenate(self._audio) if self._audio else np.zeros(0, dtype=np.int16)
        self._audio = []
        audio = int16_to_float(resample(pcm, self._audio_rate_hz, stt.sample_rate_hz))
        started = time.perf_counter()
        async with self.service.metered(self.device):
            try:
                text = (await stt.transcribe(audio)).strip() if audio.size else ""
            except ProviderError as exc:
                raise Ended(exc.code.value, f"speech to text failed: {exc}") from None
        self._observe("transcribe", started)
        if text:
            await self._send(wyoming.transcript_chunk(text))
        await self._send(wyoming.transcript(text, self._language))
        await self._send(wyoming.transcript_stop())

    async def _speak(
        self, text: str, voice: str | None, *, opened: bool, started: float | None = None
    ) -> bool:
        """``text`` as chunks, after an audio-start at its first audio unless ``opened``;
        whether the audio is open now. ``started``: when the request came (the first audio's
        latency is measured from it)."""
        tts = self.service.ctx.engines.tts
        rate = tts.sample_rate_hz
        chunk_samples = rate * CHUNK_MS // 1000
        chunks = tts.synthesize(text, voice)
        try:
            async for audio in chunks:
                if started is not None:
                    self._observe("synthesize_first_audio", started)
                    started = None
                if not opened:
                    await self._send(wyoming.audio_start(rate))
                    opened = True
                for at in range(0, len(audio), chunk_samples):
                    piece = audio[at : at + chunk_samples].astype("<i2").tobytes()
                    await self._send(wyoming.audio_chunk(piece, rate))
        except VoxgateError as exc:
            raise Ended(exc.code.value, f"text to speech failed: {exc}") from None
        finally:
            await close_stream(chunks)
        return opened

    async def _speak_all(self, text: str, voice: str | None) -> None:
        """A ``synthesize``: one audio-start and audio-stop around it, even with nothing to
        say (an empty answer is still an answer). Spoken a piece at a time, as a reply is
        (voxgate's sentence splitter: a first clause, then sentences), so the first audio
        comes after the first piece rather than after the whole text."""
        assert self.device is not None
        splitter = SentenceSplitter()
        pieces = [*splitter.push(text), *splitter.flush()]
        started: float | None = time.perf_counter()
        opened = False
        async with self.service.metered(self.device):
            for piece in pieces:
                opened = await self._speak(piece, voice, opened=opened, started=started)
                started = None if opened else started
        if not opened:
            await self._send(wyoming.audio_start(self.service.ctx.engines.tts.sample_rate_hz))
        await self._send(wyoming.audio_stop())

    async def _speak_sentences(self, sentences: list[str], voice: str | None) -> None:
        """Sentences of a streamed text, each its own audio-start ... audio-stop, as soon as it
        is complete (the reference server does the same); billed with the stream's meter."""
        with metering(self._stream_meter):
            for sentence in sentences:
                started = time.perf_counter()
                if await self._speak(sentence, voice, opened=False, started=started):
                    await self._send(wyoming.audio_stop())

    def _observe(self, kind: str, started: float) -> None:
        self._metrics.wyoming_seconds.labels(kind).observe(time.perf_counter() - started)
