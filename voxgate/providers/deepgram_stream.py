"""Deepgram live transcription (WebSocket ``/v1/listen``): the wire format without I/O, and one
thin connection per utterance (:class:`DeepgramStream`).

What this follows, checked against Deepgram's documentation (developers.deepgram.com: the
"Live Audio" API reference, "Finalize", "Close Stream", "Audio Keep Alive", "Interim Results",
"Configure Endpointing and Interim Results" and the streaming "WebSocket, NET and DATA errors"
guide):

- The handshake is ``GET wss://api.deepgram.com/v1/listen?...`` with the options in the query
  (raw PCM needs ``encoding=linear16&sample_rate=16000&channels=1``) and the header
  ``Authorization: Token <key>``. A refused handshake is an ordinary HTTP 4xx/5xx answer, with
  the reason in its ``dg-error`` header.
- Audio goes in binary frames. Control messages are JSON text frames: ``{"type": "KeepAlive"}``
  (no answer; a connection that gets neither audio nor KeepAlive for 10 s is closed with
  ``NET-0001``), ``{"type": "Finalize"}`` (the server processes the audio it still holds and
  answers with final results marked ``"from_finalize": true``; the stream stays open) and
  ``{"type": "CloseStream"}`` (the last results, then ``{"type": "Metadata", ...}``, then the
  server closes).
- Transcripts come as ``{"type": "Results", "start": s, "duration": s, "is_final": bool,
  "speech_final": bool, "from_finalize": bool, "channel": {"alternatives": [{"transcript":
  ...}]}}``. An interim result (``is_final: false``) is a guess at the current segment that the
  next result replaces; a final one is that segment for good, and the next segment follows it.
  So a stream's text is its final segments joined; the running guess is that plus the latest
  interim. ``start``/``duration`` are seconds of the audio stream.
- Errors after the handshake arrive as a close frame (e.g. 1011) whose reason says what failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from voxgate.core.audio import float_to_int16
from voxgate.core.capabilities import Float32Array
from voxgate.core.errors import ConfigError, ErrorCode, ProviderError
from voxgate.providers.http_api import retry_after_seconds

RATE_HZ = 16_000
KEEPALIVE_S = 5.0
"""Send ``KeepAlive`` after this long without audio (Deepgram closes an idle stream at 10 s)."""
COVERED_SLACK_S = 0.05
"""Final results reaching this close to the end of the audio sent cover all of it."""
FINALIZE = json.dumps({"type": "Finalize"})
KEEP_ALIVE = json.dumps({"type": "KeepAlive"})
CLOSE_STREAM = json.dumps({"type": "CloseStream"})
CODE = ErrorCode.STT_FAILED

# websockets logs the handshake's headers (the API key among them) at DEBUG: its logger here
# never goes below INFO, whatever the application's level.
_wire_logger = logging.getLogger("voxgate.providers.deepgram_stream.wire")
_wire_logger.setLevel(logging.INFO)

# -- the wire format ------------------------------------------------------------------------


def listen_url(base_url: str, model: str, language: str | None) -> str:
    """The streaming endpoint on the server at ``base_url`` (``https://`` becomes ``wss://``)."""
    ws_base = base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    query = {
        "model": model,
        "encoding": "linear16",
        "sample_rate": str(RATE_HZ),
        "channels": "1",
        "interim_results": "true",
        "punctuate": "true",
        "smart_format": "true",
    }
    if language:
        query["language"] = language
    return f"{ws_base.rstrip('/')}/v1/listen?{urlencode(query)}"


def pcm_frame(audio: Float32Array) -> bytes:
    """Float samples as the binary frame Deepgram takes: PCM16 little-endian."""
    return np.ascontiguousarray(float_to_int16(audio), dtype="<i2").tobytes()


@dataclass(frozen=True, slots=True)
class Result:
    """A ``Results`` message: the transcript of one segment, interim or final."""

    transcript: str
    is_final: bool
    speech_final: bool
    from_finalize: bool
    start_s: float
    duration_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True, slots=True)
class Metadata:
    """Sent once, after ``CloseStream``: the stream's summary."""

    request_id: str
    duration_s: float


@dataclass(frozen=True, slots=True)
class OtherMessage:
    """Anything else the server may send (``SpeechStarted``, ``UtteranceEnd``): not used."""

    type: str


ServerMessage = Result | Metadata | OtherMessage


def parse_message(text: str | bytes) -> ServerMessage:
    """One server message; a :class:`ProviderError` (not retryable) when it is unreadable."""
    try:
        payload: Any = json.loads(text)
        kind = payload["type"]
        if kind == "Results":
            transcript = payload["channel"]["alternatives"][0]["transcript"]
            if not isinstance(transcript, str):
                raise TypeError("transcript is not a string")
            return Result(
                transcript=transcript.strip(),
                is_final=bool(payload.get("is_final", False)),
                speech_final=bool(payload.get("speech_final", False)),
                from_finalize=bool(payload.get("from_finalize", False)),
                start_s=float(payload.get("start", 0.0)),
                duration_s=float(payload.get("duration", 0.0)),
            )
        if kind == "Metadata":
            return Metadata(str(payload.get("request_id", "")), float(payload.get("duration", 0)))
        return OtherMessage(str(kind))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        snippet = " ".join(str(text)[:200].split())
        raise ProviderError(
            f"unreadable message from Deepgram's live API ({type(exc).__name__}): {snippet}",
            code=CODE,
        ) from None


class TranscriptAssembly:
    """The text of a stream from its results: final segments joined, plus the latest interim."""

    def __init__(self) -> None:
        self._finals: list[str] = []
        self._interim = ""
        self.final_end_s = 0.0
        """Where the audio covered by final results ends, in seconds of the stream."""

    def add(self, result: Result) -> None:
        if result.is_final:
            if result.transcript:
                self._finals.append(result.transcript)
            self._interim = ""
            self.final_end_s = max(self.final_end_s, result.end_s)
        else:
            self._interim = result.transcript

    @property
    def text(self) -> str:
        """What the final results say."""
        return " ".join(self._finals)

    @property
    def running(self) -> str:
        """The best guess at everything said so far."""
        return " ".join(part for part in (*self._finals, self._interim) if part)


# -- the connection -------------------------------------------------------------------------

Scrub = Callable[[str], str]
"""Blanks the API key out of server text (servers may echo a key they rejected)."""


async def connect_stream(
    url: str,
    headers: Mapping[str, str],
    *,
    server: str,
    scrub: Scrub,
    timeout_s: float,
    keepalive_s: float = KEEPALIVE_S,
) -> DeepgramStream:
    """Open one stream. Raises ProviderError: retryable when connecting failed or timed out, or
    the handshake was answered 429 or 5xx."""
    try:
        ws = await connect(
            url,
            additional_headers=dict(headers),
            open_timeout=timeout_s,
            close_timeout=2.0,
            logger=_wire_logger,
        )
    except InvalidStatus as exc:
        response = exc.response
        status = response.status_code
        reason = response.headers.get("dg-error") or response.body.decode("utf-8", "replace")
        reason = scrub(" ".join(reason.split())[:200])
        if status in (401, 403):
            message = f"{server} refused the API key (HTTP {status})"
        else:
            message = f"{server} answered HTTP {status}"
        raise ProviderError(
            f"{message}: {reason}" if reason else message,
            code=CODE,
            retryable=status == 429 or status >= 500,
            retry_after_s=retry_after_seconds(response.headers.get("Retry-After")),
        ) from None
    except TimeoutError:
        raise ProviderError(
            f"{server} did not open the stream within {timeout_s:g} s", code=CODE, retryable=True
        ) from None
    except InvalidURI as exc:
        raise ConfigError(f"stt.base_url does not make a WebSocket URL: {exc}") from None
    except (OSError, InvalidHandshake) as exc:
        detail = scrub(str(exc)) or type(exc).__name__
        raise ProviderError(
            f"cannot connect to {server}: {detail}", code=CODE, retryable=True
        ) from None
    return DeepgramStream(ws, server=server, finalize_timeout_s=timeout_s, keepalive_s=keepalive_s)


class DeepgramStream:
    """One open stream: audio out, results in (a reader task), KeepAlive while idle."""

    def __init__(
        self,
        ws: ClientConnection,
        *,
        server: str,
        finalize_timeout_s: float,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self._ws = ws
        self._server = server
        self._finalize_timeout_s = finalize_timeout_s
        self._keepalive_s = keepalive_s
        self._assembly = TranscriptAssembly()
        self._samples_sent = 0
        self._finalize_answers = 0
        self._error: ProviderError | None = None
        self._closing = False
        self._changed = asyncio.Condition()
        self._interims: asyncio.Queue[str | None] = asyncio.Queue()
        self._last_sent = asyncio.get_running_loop().time()
        self.metadata: Metadata | None = None
        """The server's summary, once it has sent it (after ``CloseStream``)."""
        self._reader = asyncio.create_task(self._read(), name="deepgram-stream-reader")
        self._keeper = asyncio.create_task(self._keep_alive(), name="deepgram-stream-keepalive")

    async def push(self, audio: Float32Array) -> None:
        self._check()
        if audio.size:
            await self._send(pcm_frame(audio))
            self._samples_sent += len(audio)

    async def interim(self) -> AsyncIterator[str]:
        while (text := await self._interims.get()) is not None:
            yield text
        if self._error is not None:
            raise self._error

    async def finalize(self) -> str:
        self._check()
        sent_s = self._samples_sent / RATE_HZ
        answers_before = self._finalize_answers
        await self._send(FINALIZE)

        def done() -> bool:
            answered = self._finalize_answers > answers_before
            covered = self._assembly.final_end_s >= sent_s - COVERED_SLACK_S
            return self._error is not None or answered or covered

        try:
            async with asyncio.timeout(self._finalize_timeout_s), self._changed:
                await self._changed.wait_for(done)
        except TimeoutError:
            raise ProviderError(
                f"{self._server} did not finalize within {self._finalize_timeout_s:g} s",
                code=CODE,
                retryable=True,
            ) from None
        self._check()
        return self._assembly.text

    async def aclose(self) -> None:
        """``CloseStream``, then wait (briefly) for the server's last words and its close."""
        if self._closing:
            return
        self._closing = True
        self._keeper.cancel()
        try:
            if self._error is None:
                await self._ws.send(CLOSE_STREAM)
                async with asyncio.timeout(2.0):
                    await asyncio.shield(self._reader)
        except (ConnectionClosed, TimeoutError):
            pass
        finally:
            self._reader.cancel()
            await asyncio.gather(self._reader, self._keeper, return_exceptions=True)
            await self._ws.close()

    # -- inside ---------------------------------------------------------------------------

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closing:
            raise ProviderError(f"the stream to {self._server} is closed", code=CODE)

    async def _send(self, data: str | bytes) -> None:
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            await self._reader_done()
            raise self._error or self._lost(exc) from None
        self._last_sent = asyncio.get_running_loop().time()

    async def _reader_done(self) -> None:
        """Let the reader record why the connection ended (it knows the close frame)."""
        await asyncio.wait([self._reader], timeout=1.0)

    def _lost(self, exc: ConnectionClosed) -> ProviderError:
        frame = exc.rcvd
        why = f"{frame.code} {frame.reason}".strip() if frame is not None else "no close frame"
        return ProviderError(
            f"the stream to {self._server} was lost ({why})", code=CODE, retryable=True
        )

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                parsed = parse_message(message)
                if isinstance(parsed, Result):
                    before = self._assembly.running
                    self._assembly.add(parsed)
                    self._finalize_answers += parsed.from_finalize
                    if self._assembly.running != before:
                        self._interims.put_nowait(self._assembly.running)
                elif isinstance(parsed, Metadata):
                    self.metadata = parsed
                await self._notify()
            if not self._closing:
                self._error = ProviderError(
                    f"{self._server} ended the stream early", code=CODE, retryable=True
                )
        except ConnectionClosed as exc:
            if not self._closing:
                self._error = self._lost(exc)
        except ProviderError as exc:
            self._error = exc
            await self._ws.close(1002, "unreadable message")
        finally:
            self._interims.put_nowait(None)
            await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            idle_s = loop.time() - self._last_sent
            if idle_s >= self._keepalive_s:
                try:
                    await self._send(KEEP_ALIVE)
                except ProviderError:
                    return  # the reader reports it
                idle_s = 0.0
            await asyncio.sleep(self._keepalive_s - idle_s)
