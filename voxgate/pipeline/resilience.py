"""Failure handling shared by every engine, as adapters around the capability Protocols.

``ResilientSTT/LLM/TTS`` add retries with backoff, a circuit breaker and timeouts to one engine;
``FallbackSTT/LLM/TTS`` try a list of engines in order. They compose, e.g.
``FallbackLLM([ResilientLLM(cloud, ...), ResilientLLM(local, ...)])``: providers stay free of
retry logic and only say, with ``ProviderError.retryable``, whether trying again may help.

A stream is never retried or failed over once it has yielded something: the consumer has already
spoken (or shown) that part, and a second engine would start the reply again from the beginning.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from voxgate.core.capabilities import (
    ChatMessage,
    Float32Array,
    Int16Array,
    ReplyPiece,
    SpeechToText,
    STTStream,
    TextToSpeech,
    ToolSpec,
    can_stream,
    open_stt_stream,
)
from voxgate.core.errors import ErrorCode, ProviderError
from voxgate.core.threads import close_stream

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3
    """Tries in all, the first one included (1 = never retry)."""
    base_backoff_s: float = 0.2
    """Wait before the second try; doubles for each further try."""
    max_backoff_s: float = 2.0
    """Longest wait before a retry. A ``retry_after_s`` above it gives up at once: a live turn
    cannot wait that long, and the next engine in a fallback chain can answer now."""
    sleep: Sleep = asyncio.sleep

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("attempts must be >= 1 and backoffs >= 0")

    def next_delay_s(self, error: BaseException, attempt: int) -> float | None:
        """Seconds to wait before try ``attempt + 1`` after ``error``; ``None``: give up."""
        if not isinstance(error, ProviderError) or not error.retryable or attempt >= self.attempts:
            return None
        # Providers may attach the server's Retry-After; ProviderError itself does not declare it.
        retry_after = getattr(error, "retry_after_s", None)
        if isinstance(retry_after, int | float) and retry_after >= 0:
            return float(retry_after) if retry_after <= self.max_backoff_s else None
        return float(min(self.max_backoff_s, self.base_backoff_s * 2 ** (attempt - 1)))


class CircuitBreaker:
    """After ``failure_threshold`` failures in a row, refuse calls for ``cooldown_s``; then let one
    trial call through (half-open): its success closes the circuit, its failure reopens it."""

    def __init__(
        self, failure_threshold: int = 3, cooldown_s: float = 30.0, clock: Clock = time.monotonic
    ) -> None:
        if failure_threshold < 1 or cooldown_s < 0:
            raise ValueError("failure_threshold must be >= 1 and cooldown_s >= 0")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at < self.cooldown_s:
            return "open"
        return "half_open"

    def allow(self) -> bool:
        """Whether a call may go ahead now; in half-open state this takes the one trial slot."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self._trial_running:
            return False
        self._trial_running = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def record_failure(self) -> None:
        # The count is only reset by a success, so a failed half-open trial reopens the circuit.
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
        self._trial_running = False

    def release(self) -> None:
        """A call ended without a verdict (cancelled before any result): free the trial slot."""
        self._trial_running = False


class CircuitOpenError(ProviderError):
    """Raised at once, without calling the engine, while its circuit is open."""


class _Guard:
    """Retries, breaker and timeouts for one engine; the three adapters differ only in types."""

    def __init__(
        self,
        name: str,
        code: ErrorCode,
        policy: RetryPolicy,
        breaker: CircuitBreaker,
        timeout_s_first_byte: float | None,
        timeout_s_total: float | None,
    ) -> None:
        self.name = name
        self.code = code
        self.policy = policy
        self.breaker = breaker
        self.timeout_s_first_byte = timeout_s_first_byte
        self.timeout_s_total = timeout_s_total

    def _admit(self, last_error: ProviderError | None) -> None:
        if self.breaker.allow():
            return
        # The circuit opened during our own retries: the real failure says more than "open".
        if last_error is not None:
            raise last_error
        raise CircuitOpenError(
            f"{self.name} is skipped: it failed {self.breaker.failure_threshold} times in a row",
            code=self.code,
        )

    async def _retry_wait(self, error: ProviderError, attempt: int) -> None:
        delay_s = self.policy.next_delay_s(error, attempt)
        if delay_s is None:
            raise error
        await self.policy.sleep(delay_s)

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        last_error: ProviderError | None = None
        while True:
            attempt += 1
            self._admit(last_error)
            try:
                async with self._timeout(self.timeout_s_total, "answered"):
                    result = await make()
            except ProviderError as error:
                self.breaker.record_failure()
                last_error = error
                await self._retry_wait(error, attempt)
                continue
            except Exception:
                self.breaker.record_failure()
                raise
            except BaseException:
                self.breaker.release()
                raise
            self.breaker.record_success()
            return result

    async def stream(self, make: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        attempt = 0
        last_error: ProviderError | None = None
        while True:
            attempt += 1
            self._admit(last_error)
            source = make()
            yielded = False
            spent_s = 0.0
            try:
                while True:
                    # Only time spent waiting on the engine counts: a consumer that is slow to
                    # pull (playout pacing) must not make the engine look slow.
                    limit_s = _remaining(self.timeout_s_total, spent_s)
                    first_byte_s = None if yielded else self.timeout_s_first_byte
                    if first_byte_s is not None:
                        limit_s = first_byte_s if limit_s is None else min(limit_s, first_byte_s)
                    started = asyncio.get_running_loop().time()
                    try:
                        what = "finished" if yielded else "started"
                        async with self._timeout(limit_s, what):
                            item = await anext(source)
                    except StopAsyncIteration:
                        break
                    finally:
                        spent_s += asyncio.get_running_loop().time() - started
                    yielded = True
                    yield item
            except ProviderError as error:
                self.breaker.record_failure()
                if yielded:
                    raise
                last_error = error
                await close_stream(source)
                await self._retry_wait(error, attempt)
                continue
            except Exception:
                self.breaker.record_failure()
                raise
            except BaseException:
                # Closed or cancelled by the consumer: the engine worked if it produced anything.
                if yielded:
                    self.breaker.record_success()
                else:
                    self.breaker.release()
                raise
            finally:
                await close_stream(source)
            self.breaker.record_success()
            return

    def _timeout(self, limit_s: float | None, what: str) -> _Timeout:
        def error() -> ProviderError:
            budget_s = self.timeout_s_total if what == "finished" else limit_s
            return ProviderError(
                f"{self.name} had not {what} after {budget_s:.3g} s", code=self.code, retryable=True
            )

        return _Timeout(limit_s, error)


class _Timeout:
    """``asyncio.timeout`` that turns its own expiry (only) into a ProviderError: an engine's own
    TimeoutError is left as it is."""

    def __init__(self, limit_s: float | None, error: Callable[[], ProviderError]) -> None:
        self._inner = asyncio.timeout(limit_s)
        self._error = error

    async def __aenter__(self) -> None:
        await self._inner.__aenter__()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await self._inner.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            if self._inner.expired():
                raise self._error() from None
            raise


def _remaining(total_s: float | None, spent_s: float) -> float | None:
    return None if total_s is None else max(0.0, total_s - spent_s)


# ---------------------------------------------------------------------------------------------
# One engine made resilient


class _Resilient:
    """An engine behind a :class:`_Guard`; subclasses say which error code their failures get."""

    code: ErrorCode

    def __init__(
        self,
        inner: Any,
        policy: RetryPolicy,
        breaker: CircuitBreaker,
        timeout_s_first_byte: float | None = None,
        timeout_s_total: float | None = None,
        *,
        name: str | None = None,
    ) -> None:
        self.inner = inner
        self.model: str = inner.model
        self.guard = _Guard(
            name or type(inner).__name__,
            self.code,
            policy,
            breaker,
            timeout_s_first_byte,
            timeout_s_total,
        )


class ResilientSTT(_Resilient):
    code = ErrorCode.STT_FAILED

    def __init__(
        self,
        inner: SpeechToText,
        policy: RetryPolicy,
        breaker: CircuitBreaker,
        timeout_s_total: float | None = None,
        *,
        name: str | None = None,
    ) -> None:
        # No first-byte timeout: a transcription is one answer, not a stream.
        super().__init__(inner, policy, breaker, None, timeout_s_total, name=name)
        self.sample_rate_hz = inner.sample_rate_hz
        self.streaming = can_stream(inner)

    async def transcribe(self, audio: Float32Array) -> str:
        result: str = await self.guard.call(lambda: self.inner.transcribe(audio))
        return result

    async def open_stream(self) -> STTStream:
        """Opening is retried like a call; once open, a failure is not (the audio already sent
        cannot be replayed) but counts on the breaker, and ``finalize`` has the total timeout."""
        stream: STTStream = await self.guard.call(lambda: open_stt_stream(self.inner))
        return _GuardedStream(stream, self.guard)


class _GuardedStream:
    def __init__(self, inner: STTStream, guard: _Guard) -> None:
        self._inner = inner
        self._guard = guard

    async def push(self, audio: Float32Array) -> None:
        try:
            await self._inner.push(audio)
        except ProviderError:
            self._guard.breaker.record_failure()
            raise

    def interim(self) -> AsyncIterator[str]:
        return self._inner.interim()

    async def finalize(self) -> str:
        guard = self._guard
        try:
            async with guard._timeout(guard.timeout_s_total, "answered"):
                text = await self._inner.finalize()
        except ProviderError:
            guard.breaker.record_failure()
            raise
        guard.breaker.record_success()
        return text

    async def aclose(self) -> None:
        await self._inner.aclose()


class ResilientLLM(_Resilient):
    code = ErrorCode.LLM_FAILED

    def stream_reply(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ReplyPiece]:
        stream: AsyncIterator[ReplyPiece] = self.guard.stream(
            lambda: self.inner.stream_reply(messages, tools)
        )
        return stream


class ResilientTTS(_Resilient):
    code = ErrorCode.TTS_FAILED

    def __init__(
        self,
        inner: TextToSpeech,
        policy: RetryPolicy,
        breaker: CircuitBreaker,
        timeout_s_first_byte: float | None = None,
        timeout_s_total: float | None = None,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(inner, policy, breaker, timeout_s_first_byte, timeout_s_total, name=name)
        self.sample_rate_hz = inner.sample_rate_hz

    def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[Int16Array]:
        stream: AsyncIterator[Int16Array] = self.guard.stream(
            lambda: self.inner.synthesize(text, voice)
        )
        return stream
