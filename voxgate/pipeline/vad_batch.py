"""One VAD inference for every session's new audio: frames gather while the previous call runs.

Each session awaits :meth:`VADBatcher.speech_probabilities` for its frame. The first request finds
the batcher idle and starts a call at once (no timer, so a lone microphone waits for nothing); the
frames that arrive while that call runs in the VAD thread are taken together by the next call.
Under load the batch grows by itself and the number of calls (and thread hops) stays at about one
per inference time, whatever the number of microphones; a session's own state row moves on only in
the VAD thread, one call at a time.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass

from voxgate.core.capabilities import BatchingVAD, Float32Array, VADStream


@dataclass(slots=True)
class _Request:
    stream: VADStream
    chunks: Float32Array
    answer: asyncio.Future[Float32Array]


class VADBatcher:
    def __init__(self, vad: BatchingVAD, thread: Executor, max_streams: int = 1024) -> None:
        self.vad = vad
        self._thread = thread
        self._max_streams = max_streams
        self._waiting: list[_Request] = []
        self._runner: asyncio.Task[None] | None = None
        self.calls = 0
        """Inference calls made (for tests and the bench: fewer than the frames under load)."""

    async def speech_probabilities(self, stream: VADStream, chunks: Float32Array) -> Float32Array:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Float32Array] = loop.create_future()
        self._waiting.append(_Request(stream, chunks, answer))
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run(), name="voxgate-vad-batch")
        return await answer

    def _take(self) -> list[_Request]:
        """The next batch: waiting requests in arrival order, each stream once (a stream's second
        frame waits for the next call, so its state moves on in order)."""
        batch: list[_Request] = []
        later: list[_Request] = []
        seen: set[int] = set()
        for request in self._waiting:
            if request.answer.done():
                continue  # its session stopped waiting (closed)
            if id(request.stream) in seen or len(batch) >= self._max_streams:
                later.append(request)
            else:
                seen.add(id(request.stream))
                batch.append(request)
        self._waiting = later
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while batch := self._take():
            streams = [request.stream for request in batch]
            chunks = [request.chunks for request in batch]
            self.calls += 1
            try:
                results = await loop.run_in_executor(
                    self._thread, self.vad.speech_probabilities_batch, streams, chunks
                )
            except Exception as exc:  # every session of this call hears of it, none hangs
                for request in batch:
                    if not request.answer.done():
                        request.answer.set_exception(exc)
                continue
            for request, result in zip(batch, results, strict=True):
                if not request.answer.done():
                    request.answer.set_result(result)
