"""Streaming transcription of one utterance, for a session whose STT can stream.

The session opens an :class:`UtteranceStream` when speech begins (with the pre-roll), pushes
every chunk while the user speaks, and gives each reply it starts a :meth:`transcript` to
transcribe with: the stream's finalized text, so the engine hears (and bills) the audio once.
A speculative reply holds back the audio that follows (the end-of-turn silence is sent only if
the user goes on); the stream closes once the committed reply has its transcript.

If the stream fails at any point, replies fall back to the batch ``transcribe`` of the recorded
utterance, which goes through the engine's whole fallback chain; the user hears of it only if
that fails too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from voxgate.core.capabilities import Float32Array, StreamingSpeechToText, STTStream
from voxgate.core.errors import ErrorCode, ProviderError

logger = logging.getLogger(__name__)


class StreamedTranscript:
    """One reply's way to its transcript (``ReplyRequest.transcribe``)."""

    def __init__(self, utterance: UtteranceStream) -> None:
        self._utterance = utterance
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Resolved once the reply has its transcript (or gave up on it)."""

    async def __call__(self, audio: Float32Array) -> str:
        try:
            return await self._utterance.transcribe(audio)
        finally:
            if not self.done.done():
                self.done.set_result(None)


class UtteranceStream:
    def __init__(
        self,
        stt: StreamingSpeechToText,
        pre_roll: Float32Array,
        on_interim: Callable[[str], None],
    ) -> None:
        """``stt``: the session's whole STT (its wrappers and fallbacks); ``on_interim`` gets the
        running guesses while the utterance is under way."""
        self._stt = stt
        self._on_interim = on_interim
        self._audio: asyncio.Queue[Float32Array] = asyncio.Queue()
        self._held: list[Float32Array] = []
        self._holding = False
        self._ended = False
        self._closed = False
        self._stream: STTStream | None = None
        self._failure: Exception | None = None
        self._opened = asyncio.Event()
        self._lock = asyncio.Lock()  # one call on the stream at a time
        self._last: StreamedTranscript | None = None
        self._workers = [asyncio.create_task(self._pump(), name="voxgate-stt-stream")]
        self.push(pre_roll)

    # -- the session's side -------------------------------------------------------------------

    def push(self, audio: Float32Array) -> None:
        if self._ended or self._failure is not None:
            return
        if self._holding:
            self._held.append(audio)
        else:
            self._audio.put_nowait(audio)

    def transcript(self) -> StreamedTranscript:
        """For a reply starting now. Audio pushed from now on is held back until :meth:`resume`
        (if the reply is committed, that silence is never sent)."""
        self._holding = True
        self._last = StreamedTranscript(self)
        return self._last

    def resume(self) -> None:
        """The user went on talking: send what was held back, and what follows."""
        self._holding = False
        held, self._held = self._held, []
        for audio in held:
            self.push(audio)

    def end(self, reply: asyncio.Future[None] | None) -> asyncio.Task[None]:
        """No more audio. Closes once the last reply made (the committed one) has its transcript,
        or ``reply`` (its task) is over, at once without one."""
        self._ended = True
        self._held = []
        waits: set[asyncio.Future[None]] = set()
        if reply is not None:
            waits.add(reply)
            if self._last is not None:
                waits.add(self._last.done)
        return asyncio.create_task(self._close_after(waits), name="voxgate-stt-stream-close")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = self._ended = True
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._fail(ProviderError("the utterance's stream is closed", code=ErrorCode.STT_FAILED))
        if self._stream is not None:
            try:
                await self._stream.aclose()
            except Exception:
                logger.warning("closing an STT stream failed", exc_info=True)

    # -- a reply's side -----------------------------------------------------------------------

    async def transcribe(self, audio: Float32Array) -> str:
        """The stream's final text of everything pushed so far; the batch transcription of
        ``audio`` (the recorded utterance) if the stream failed."""
        try:
            return await self._finalize()
        except ProviderError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug in the stream: still answer the user
            logger.exception("an STT stream failed")
            self._fail(exc)
        return await self._stt.transcribe(audio)

    async def _finalize(self) -> str:
        await self._opened.wait()
        await self._audio.join()  # everything pushed before this has been sent
        if self._failure is not None:
            raise self._failure
        assert self._stream is not None
        async with self._lock:
            return await self._stream.finalize()

    # -- inside -------------------------------------------------------------------------------

    async def _pump(self) -> None:
        try:
            self._stream = stream = await self._stt.open_stream()
        except Exception as exc:
            self._fail(exc)
            return
        finally:
            self._opened.set()
        self._workers.append(asyncio.create_task(self._relay_interims(stream)))
        try:
            while True:
                audio = await self._audio.get()
                try:
                    if self._failure is None:
                        async with self._lock:
                            await stream.push(audio)
                finally:
                    self._audio.task_done()
        except Exception as exc:
            self._fail(exc)

    async def _relay_interims(self, stream: STTStream) -> None:
        try:
            async for text in stream.interim():
                if not self._ended:
                    self._on_interim(text)
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        """From now on replies use the batch STT; nothing more is sent."""
        if self._failure is None:
            self._failure = exc
            if not self._closed:
                logger.info("STT stream failed; the batch STT takes over: %s", exc)
        while not self._audio.empty():
            self._audio.get_nowait()
            self._audio.task_done()

    async def _close_after(self, waits: set[asyncio.Future[None]]) -> None:
        if waits:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        await self.aclose()
