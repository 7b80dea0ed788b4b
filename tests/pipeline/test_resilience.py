"""Retries, circuit breaker, timeouts and fallback chains, with scripted fake engines.

Nothing here sleeps for real beyond a few milliseconds: backoff goes through an injected sleep
that only records, the breaker reads an injected clock, and timeouts are a few ms long.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest

from voxgate.core.capabilities import ChatMessage, Float32Array, Int16Array, ToolSpec
from voxgate.core.errors import ErrorCode, ProviderError
from voxgate.pipeline.fallback import FallbackLLM, FallbackSTT, FallbackTTS
from voxgate.pipeline.resilience import (
    CircuitBreaker,
    CircuitOpenError,
    ResilientLLM,
    ResilientSTT,
    ResilientTTS,
    RetryPolicy,
)

HANG = "<hang>"
"""In a stream script: wait forever at this point (the engine went silent)."""

MESSAGES = [ChatMessage("user", "hi")]


def failure(
    retryable: bool = True,
    code: ErrorCode = ErrorCode.LLM_FAILED,
    retry_after_s: float | None = None,
) -> ProviderError:
    error = ProviderError(f"scripted {code}", code=code, retryable=retryable)
    if retry_after_s is not None:
        error.retry_after_s = retry_after_s  # type: ignore[attr-defined]
    return error


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """An injected sleep: records the delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)


class ScriptedSTT:
    streaming = False
    model = "scripted"

    def __init__(self, script: Sequence[str | Exception], sample_rate_hz: int = 16_000) -> None:
        self.script = list(script)
        self.sample_rate_hz = sample_rate_hz
        self.audio_lengths: list[int] = []

    @property
    def calls(self) -> int:
        return len(self.audio_lengths)

    async def transcribe(self, audio: Float32Array) -> str:
        self.audio_lengths.append(len(audio))
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


class ScriptedStreams:
    """Each call streams the next script: items are yielded, exceptions raised, HANG hangs."""

    model = "scripted"

    def __init__(self, scripts: Sequence[Sequence[object]]) -> None:
        self.scripts = [list(script) for script in scripts]
        self.calls = 0

    async def _stream(self) -> AsyncIterator[object]:
        self.calls += 1
        for item in self.scripts.pop(0):
            if isinstance(item, Exception):
                raise item
            if isinstance(item, str) and item == HANG:
                await asyncio.Event().wait()
            await asyncio.sleep(0)  # like a real engine: each piece waits on I/O
            yield item


class ScriptedLLM(ScriptedStreams):
    async def stream_reply(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[str]:
        async for item in self._stream():
            assert isinstance(item, str)
            yield item


class ScriptedTTS(ScriptedStreams):
    def __init__(self, scripts: Sequence[Sequence[object]], sample_rate_hz: int) -> None:
        super().__init__(scripts)
        self.sample_rate_hz = sample_rate_hz

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[Int16Array]:
        async for item in self._stream():
            assert isinstance(item, np.ndarray)
            yield item


def policy(sleeps: Sleeps, attempts: int = 3) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, base_backoff_s=0.2, max_backoff_s=1.0, sleep=sleeps)


def breaker(clock: Clock | None = None, threshold: int = 5) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=threshold, cooldown_s=10.0, clock=clock or Clock())


async def collect(stream: AsyncIterator[str]) -> str:
    return "".join([piece async for piece in stream])


AUDIO = np.zeros(1600, dtype=np.float32)

# ---------------------------------------------------------------------------------------------
# Retries


async def test_retry_then_success_backs_off_exponentially() -> None:
    sleeps = Sleeps()
    stt = ScriptedSTT([failure(), failure(), "hello"])
    resilient = ResilientSTT(stt, policy(sleeps), breaker())
    assert await resilient.transcribe(AUDIO) == "hello"
    assert stt.calls == 3
    assert sleeps.delays == pytest.approx([0.2, 0.4])


def test_backoff_is_capped() -> None:
    retry = RetryPolicy(attempts=6, base_backoff_s=0.3, max_backoff_s=1.0)
    delays = [retry.next_delay_s(failure(), attempt) for attempt in range(1, 7)]
    assert delays == pytest.approx([0.3, 0.6, 1.0, 1.0, 1.0, None])


async def test_retry_after_is_honoured() -> None:
    sleeps = Sleeps()
    stt = ScriptedSTT([failure(retry_after_s=0.75), "ok"])
    assert await ResilientSTT(stt, policy(sleeps), breaker()).transcribe(AUDIO) == "ok"
    assert sleeps.delays == [0.75]


async def test_retry_after_longer_than_max_backoff_gives_up_at_once() -> None:
    sleeps = Sleeps()
    error = failure(retry_after_s=30.0)
    stt = ScriptedSTT([error, "too late"])
    with pytest.raises(ProviderError) as raised:
        await ResilientSTT(stt, policy(sleeps), breaker()).transcribe(AUDIO)
    assert raised.value is error
    assert (stt.calls, sleeps.delays) == (1, [])


async def test_non_retryable_is_not_retried() -> None:
    sleeps = Sleeps()
    error = failure(retryable=False, code=ErrorCode.UNAUTHORIZED)
    stt = ScriptedSTT([error, "never"])
    with pytest.raises(ProviderError) as raised:
        await ResilientSTT(stt, policy(sleeps), breaker()).transcribe(AUDIO)
    assert raised.value is error
    assert (stt.calls, sleeps.delays) == (1, [])


async def test_attempts_run_out_with_the_last_error() -> None:
    sleeps = Sleeps()
    last = failure(code=ErrorCode.RATE_LIMITED)
    stt = ScriptedSTT([failure(), last, "never"])
    with pytest.raises(ProviderError) as raised:
        await ResilientSTT(stt, policy(sleeps, attempts=2), breaker()).transcribe(AUDIO)
    assert raised.value is last
    assert stt.calls == 2


async def test_stream_is_retried_before_its_first_piece() -> None:
    sleeps = Sleeps()
    llm = ScriptedLLM([[failure()], ["Hel", "lo"]])
    assert await collect(ResilientLLM(llm, policy(sleeps), breaker()).stream_reply(MESSAGES)) == (
        "Hello"
    )
    assert llm.calls == 2


async def test_stream_that_failed_after_yielding_is_neither_retried_nor_fallen_over() -> None:
    sleeps = Sleeps()
    error = failure()
    primary = ScriptedLLM([["Hel", error], ["again"]])
    backup = ScriptedLLM([["other"]])
    chain = FallbackLLM([ResilientLLM(primary, policy(sleeps), breaker()), backup])
    received: list[str] = []
    with pytest.raises(ProviderError) as raised:
        async for piece in chain.stream_reply(MESSAGES):
            received.append(piece)
    assert raised.value is error
    assert received == ["Hel"]
    assert (primary.calls, backup.calls, sleeps.delays) == (1, 0, [])


# ---------------------------------------------------------------------------------------------
# Circuit breaker


def state(circuit: CircuitBreaker) -> str:
    # A call, not the property: mypy would otherwise keep the first narrowing of the Literal.
    return circuit.state


def test_breaker_opens_half_opens_and_closes() -> None:
    clock = Clock()
    circuit = CircuitBreaker(failure_threshold=2, cooldown_s=10.0, clock=clock)
    circuit.record_failure()
    assert state(circuit) == "closed" and circuit.allow()
    circuit.record_failure()
    assert state(circuit) == "open"
    assert not circuit.allow()

    clock.now += 10.0
    assert state(circuit) == "half_open"
    assert circuit.allow()  # the one trial call
    assert not circuit.allow()  # nobody else while it runs
    circuit.record_failure()  # the trial failed: open for another cooldown
    assert state(circuit) == "open" and not circuit.allow()

    clock.now += 10.0
    assert circuit.allow()
    circuit.record_success()
    assert state(circuit) == "closed" and circuit.allow() and circuit.allow()


def test_success_resets_the_count_of_failures_in_a_row() -> None:
    circuit = CircuitBreaker(failure_threshold=2, cooldown_s=10.0, clock=Clock())
    circuit.record_failure()
    circuit.record_success()
    circuit.record_failure()
    assert circuit.state == "closed"


async def test_open_breaker_skips_the_engine_without_calling_it() -> None:
    clock, sleeps = Clock(), Sleeps()
    stt = ScriptedSTT([failure(retryable=False), failure(retryable=False), "back"])
    resilient = ResilientSTT(stt, policy(sleeps), breaker(clock, threshold=2))
    for _ in range(2):
        with pytest.raises(ProviderError):
            await resilient.transcribe(AUDIO)
    with pytest.raises(CircuitOpenError) as raised:
        await resilient.transcribe(AUDIO)
    assert raised.value.code == ErrorCode.STT_FAILED
    assert stt.calls == 2

    clock.now += 10.0  # half-open: one trial goes through, and its success closes the circuit
    assert await resilient.transcribe(AUDIO) == "back"
    assert resilient.guard.breaker.state == "closed"


async def test_breaker_opening_during_retries_reports_the_real_error() -> None:
    sleeps = Sleeps()
    last = failure(code=ErrorCode.RATE_LIMITED)
    stt = ScriptedSTT([failure(), last, "never"])
    with pytest.raises(ProviderError) as raised:
        await ResilientSTT(stt, policy(sleeps, attempts=5), breaker(threshold=2)).transcribe(AUDIO)
    assert raised.value is last
    assert stt.calls == 2


async def test_trial_cancelled_before_any_result_frees_the_half_open_slot() -> None:
    clock = Clock()
    circuit = breaker(clock, threshold=1)
    circuit.record_failure()
    clock.now += 10.0
    resilient = ResilientLLM(ScriptedLLM([[HANG]]), policy(Sleeps()), circuit)
    task = asyncio.create_task(collect(resilient.stream_reply(MESSAGES)))
    await asyncio.sleep(0.001)
    assert not circuit.allow()  # the trial is running
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert circuit.allow()


# ---------------------------------------------------------------------------------------------
# Timeouts


async def test_first_byte_timeout_falls_over() -> None:
    silent = ScriptedLLM([[HANG]])
    backup = ScriptedLLM([["from ", "backup"]])
    guarded = ResilientLLM(
        silent, policy(Sleeps(), attempts=1), breaker(), timeout_s_first_byte=0.005
    )
    chain = FallbackLLM([guarded, backup])
    assert await collect(chain.stream_reply(MESSAGES)) == "from backup"
    assert (silent.calls, backup.calls) == (1, 1)


async def test_first_byte_timeout_error_says_so() -> None:
    guarded = ResilientLLM(
        ScriptedLLM([[HANG]]), policy(Sleeps(), attempts=1), breaker(), timeout_s_first_byte=0.005
    )
    with pytest.raises(ProviderError, match=r"^ScriptedLLM had not started after 0\.005 s$"):
        await collect(guarded.stream_reply(MESSAGES))


async def test_total_timeout_after_yielding_surfaces() -> None:
    llm = ScriptedLLM([["Hel", HANG], ["never"]])
    resilient = ResilientLLM(llm, policy(Sleeps()), breaker(), timeout_s_total=0.005)
    received: list[str] = []
    with pytest.raises(ProviderError) as raised:
        async for piece in resilient.stream_reply(MESSAGES):
            received.append(piece)
    assert raised.value.code == ErrorCode.LLM_FAILED
    assert str(raised.value) == "ScriptedLLM had not finished after 0.005 s"
    assert received == ["Hel"] and llm.calls == 1


async def test_a_slow_consumer_does_not_count_against_the_total_timeout() -> None:
    llm = ScriptedLLM([["a", "b", "c"]])
    resilient = ResilientLLM(llm, policy(Sleeps()), breaker(), timeout_s_total=0.005)
    received = []
    async for piece in resilient.stream_reply(MESSAGES):
        received.append(piece)
        await asyncio.sleep(0.004)  # 12 ms in all between pulls, over the 5 ms budget
    assert received == ["a", "b", "c"]


async def test_stt_total_timeout_is_retryable_and_retried() -> None:
    class SlowOnce(ScriptedSTT):
        async def transcribe(self, audio: Float32Array) -> str:
            if not self.audio_lengths:
                self.audio_lengths.append(len(audio))
                await asyncio.Event().wait()
            return await super().transcribe(audio)

    sleeps = Sleeps()
    stt = SlowOnce(["second try"])
    resilient = ResilientSTT(stt, policy(sleeps), breaker(), timeout_s_total=0.005)
    assert await resilient.transcribe(AUDIO) == "second try"
    assert len(sleeps.delays) == 1


# ---------------------------------------------------------------------------------------------
# Fallback chains


async def test_fallback_tries_engines_in_order() -> None:
    first = ScriptedLLM([[failure(retryable=False)]])
    second = ScriptedLLM([["second"]])
    third = ScriptedLLM([["third"]])
    assert await collect(FallbackLLM([first, second, third]).stream_reply(MESSAGES)) == "second"
    assert (first.calls, second.calls, third.calls) == (1, 1, 0)


async def test_fallback_skips_an_engine_whose_breaker_is_open() -> None:
    circuit = breaker(threshold=1)
    circuit.record_failure()
    dead = ScriptedLLM([["unreachable"]])
    backup = ScriptedLLM([["backup"]])
    chain = FallbackLLM([ResilientLLM(dead, policy(Sleeps()), circuit), backup])
    assert await collect(chain.stream_reply(MESSAGES)) == "backup"
    assert dead.calls == 0


async def test_all_failing_raises_the_last_error_with_its_code() -> None:
    last = failure(code=ErrorCode.RATE_LIMITED)
    chain = FallbackSTT([ScriptedSTT([failure(code=ErrorCode.STT_FAILED)]), ScriptedSTT([last])])
    with pytest.raises(ProviderError) as raised:
        await chain.transcribe(AUDIO)
    assert raised.value is last and raised.value.code == ErrorCode.RATE_LIMITED

    last_llm = failure(code=ErrorCode.UNAUTHORIZED, retryable=False)
    llm_chain = FallbackLLM([ScriptedLLM([[failure()]]), ScriptedLLM([[last_llm]])])
    with pytest.raises(ProviderError) as raised:
        await collect(llm_chain.stream_reply(MESSAGES))
    assert raised.value is last_llm and raised.value.code == ErrorCode.UNAUTHORIZED


async def test_a_bug_in_an_engine_is_not_hidden_by_the_fallback() -> None:
    backup = ScriptedSTT(["backup"])
    with pytest.raises(ZeroDivisionError):
        await FallbackSTT([ScriptedSTT([ZeroDivisionError()]), backup]).transcribe(AUDIO)
    assert backup.calls == 0


async def test_stt_fallback_gets_audio_at_its_own_rate() -> None:
    primary = ScriptedSTT([failure(code=ErrorCode.STT_FAILED)], sample_rate_hz=16_000)
    backup = ScriptedSTT(["ok"], sample_rate_hz=8_000)
    chain = FallbackSTT([primary, backup])
    assert chain.sample_rate_hz == 16_000
    assert await chain.transcribe(np.zeros(16_000, dtype=np.float32)) == "ok"
    assert primary.audio_lengths == [16_000]
    assert backup.audio_lengths == [8_000]


def sine(rate_hz: int, ms: int) -> Int16Array:
    t = np.arange(rate_hz * ms // 1000) / rate_hz
    return (np.sin(2 * np.pi * 440.0 * t) * 10_000).astype(np.int16)


async def test_tts_fallback_resamples_to_the_first_engines_rate() -> None:
    primary = ScriptedTTS([[failure(code=ErrorCode.TTS_FAILED)]], sample_rate_hz=16_000)
    clip = sine(24_000, 300)
    backup = ScriptedTTS([np.array_split(clip, 10)], sample_rate_hz=24_000)
    chain = FallbackTTS([ResilientTTS(primary, policy(Sleeps(), attempts=1), breaker()), backup])
    assert chain.sample_rate_hz == 16_000

    chunks = [chunk async for chunk in chain.synthesize("hello")]
    audio = np.concatenate(chunks)
    assert all(chunk.dtype == np.int16 for chunk in chunks)
    assert abs(len(audio) - 4_800) <= 2  # 300 ms at 16 kHz, not at 24 kHz
    # Still a 440 Hz tone: the strongest frequency of the middle, read at 16 kHz.
    middle = audio[1_000:3_600].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(middle))
    assert np.fft.rfftfreq(len(middle), 1 / 16_000)[spectrum.argmax()] == pytest.approx(440, abs=10)


async def test_tts_fallback_at_the_same_rate_passes_chunks_through() -> None:
    chunk = sine(16_000, 20)
    chain = FallbackTTS([ScriptedTTS([[chunk]], sample_rate_hz=16_000)])
    received = [c async for c in chain.synthesize("hi")]
    assert len(received) == 1 and received[0] is chunk


def test_an_empty_chain_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        FallbackLLM([])
