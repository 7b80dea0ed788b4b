"""``voxgate bench providers``: the same speech clips, prompts and sentences to every candidate
engine, one engine at a time (so they never compete for the CPU), each call timed and priced.

Engines run bare (no retries, breaker or fallback: see :func:`candidates.load`) but metered as the
turn engine meters them, so a cost here is what a turn would be billed. Each engine answers one
untimed call first: lazy initialisation is not what a user waits for, and an engine that cannot
answer it (no key, wrong URL, no server) is listed as skipped, with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from voxgate.benchmarks import calls
from voxgate.benchmarks import candidates as cands
from voxgate.benchmarks.calls import ENGINE_ERRORS, Figures, Sample
from voxgate.benchmarks.candidates import Candidates, Capability
from voxgate.core.capabilities import ChatMessage, ModelResolver
from voxgate.core.config import Price
from voxgate.core.errors import ConfigError
from voxgate.pipeline.metering import MeteredLLM, MeteredSTT, MeteredTTS
from voxgate.speech_corpus import Clip

Advance = Callable[[str], None]
"""Called once per step (a load or a call) with what is going on: drives a progress bar."""

PROMPTS = (
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Give me one tip for sleeping better.",
    "Tell me a fun fact about the moon.",
    "What can I cook tonight with eggs and spinach?",
)
SENTENCES = (
    "The capital of France is Paris.",
    "A spider has eight legs.",
    "Try to go to bed at the same time every night.",
    "The moon moves a little further away from the Earth every year.",
    "How about a spinach omelette with a bit of cheese?",
)


@dataclass(frozen=True, slots=True)
class Inputs:
    clips: Sequence[Clip]
    prompts: Sequence[str] = PROMPTS
    sentences: Sequence[str] = SENTENCES
    system_prompt: str = "Answer in one short sentence."
    rounds: int = 1

    def calls(self, capability: Capability) -> int:
        items = {"stt": self.clips, "llm": self.prompts, "tts": self.sentences}[capability]
        return self.rounds * len(items)

    def steps(self, candidates: Candidates) -> int:
        """Progress steps in all: one load per engine (and the judge), then one per call."""
        judge = 1 if candidates.judge is not None and candidates.tts else 0
        return judge + sum(
            len(sections) * (1 + self.calls(capability))
            for capability, sections in candidates.by_capability()
        )


@dataclass(slots=True)
class EngineResult:
    capability: Capability
    name: str
    status: Literal["ok", "skipped", "failed"] = "ok"
    reason: str | None = None
    """Why it was skipped, or the first error of a call that failed."""
    errors: int = 0
    """Calls that failed (a run with some is still ``ok``; with only failures, ``failed``)."""
    figures: Figures = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)


@dataclass(slots=True)
class BenchResult:
    engines: list[EngineResult]
    inputs: Inputs
    judge: str | None
    """The STT that scored TTS intelligibility (None: not scored)."""
    judge_problem: str | None = None
    started_at: float = field(default_factory=time.time)

    def of(self, capability: Capability) -> list[EngineResult]:
        """The engines of ``capability`` that produced figures."""
        return [e for e in self.engines if e.capability == capability and e.status == "ok"]


class _Runner:
    def __init__(
        self, inputs: Inputs, prices: dict[str, Price], models: ModelResolver, advance: Advance
    ) -> None:
        self.inputs = inputs
        self.prices = prices
        self.models = models
        self.advance = advance
        self.judge: Any | None = None
        """Listens to the TTS engines' audio (loaded before them)."""

    async def measure(self, capability: Capability, section: Any, name: str) -> EngineResult:
        result = EngineResult(capability, name)
        calls_left = self.inputs.calls(capability)
        self.advance(f"loading {capability} {name}")
        try:
            engine = cands.load(capability, section, self.models)
        except ENGINE_ERRORS as exc:
            result.status, result.reason = "skipped", str(exc)
            self._skip_steps(result, calls_left)
            return result
        try:
            await self._calls(result, section, engine)
        finally:
            await close_engine(engine)
        return result

    def _skip_steps(self, result: EngineResult, count: int) -> None:
        # The steps it would have taken count as done, so the progress bar still ends full.
        for _ in range(count):
            self.advance(f"{result.capability} {result.name}: skipped")

    async def _calls(self, result: EngineResult, section: Any, engine: Any) -> None:
        plan = self._plan(result.capability, section, engine)
        try:
            await plan.warm()
        except ENGINE_ERRORS as exc:
            result.status, result.reason = "skipped", f"first call failed: {exc}"
            self._skip_steps(result, self.inputs.calls(result.capability))
            return
        for _ in range(self.inputs.rounds):
            for item in plan.items:
                self.advance(f"{result.capability} {result.name}")
                try:
                    result.samples.append(await plan.call(item))
                except ENGINE_ERRORS as exc:
                    result.errors += 1
                    result.reason = result.reason or str(exc)
        result.figures = plan.summarise(result.samples)
        if not result.samples:
            result.status = "failed"

    def _plan(self, capability: Capability, section: Any, engine: Any) -> _Plan:
        """What to send an engine of ``capability``, wrapped in the turn engine's metering."""
        price = self.prices.get(f"{section.provider}/{engine.model}", Price())
        if capability == "stt":
            stt = MeteredSTT(engine, section.provider, price)
            audio = [calls.clip_audio(clip, stt.sample_rate_hz) for clip in self.inputs.clips]

            async def transcribe(item: tuple[Clip, Any]) -> Sample:
                return await calls.transcribe(stt, *item)

            return _Plan(
                lambda: stt.transcribe(audio[0]),
                list(zip(self.inputs.clips, audio, strict=True)),
                transcribe,
                calls.summarise_stt,
            )
        if capability == "llm":
            llm = MeteredLLM(engine, section.provider, price)
            # The system prompt is in the untimed call too, as the turn engine's warm-up does,
            # so an engine with a prompt cache starts every timed call with it warm.
            hello = [ChatMessage("system", self.inputs.system_prompt), ChatMessage("user", "Hi")]

            async def reply(prompt: str) -> Sample:
                return await calls.reply(llm, self.inputs.system_prompt, prompt)

            return _Plan(
                lambda: _drain(llm.stream_reply(hello)),
                list(self.inputs.prompts),
                reply,
                calls.summarise_llm,
            )
        tts = MeteredTTS(engine, section.provider, price)

        async def speak(sentence: str) -> Sample:
            return await calls.speak(tts, sentence, self.judge)

        return _Plan(
            lambda: _drain(tts.synthesize("Ready.")),
            list(self.inputs.sentences),
            speak,
            calls.summarise_tts,
        )


@dataclass(frozen=True, slots=True)
class _Plan:
    warm: Callable[[], Awaitable[object]]
    """One untimed call."""
    items: list[Any]
    call: Callable[[Any], Awaitable[Sample]]
    summarise: Callable[[list[Sample]], Figures]


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


async def close_engine(engine: Any) -> None:
    # Cloud engines hold an HTTP client; local ones are freed with their last reference.
    closer = getattr(engine, "aclose", None)
    if closer is not None:
        await closer()


async def run_benchmark(
    candidates: Candidates,
    inputs: Inputs,
    prices: dict[str, Price],
    models: ModelResolver,
    advance: Advance = lambda _: None,
) -> BenchResult:
    """Measure every candidate, one after the other. An engine's failure is reported in its
    result, never raised."""
    if not inputs.clips:
        raise ConfigError("no speech clips to transcribe")
    runner = _Runner(inputs, prices, models, advance)
    engines: list[EngineResult] = []
    # STT and LLM first; TTS after the judge is loaded.
    for capability, sections in candidates.by_capability()[:2]:
        for section, name in zip(sections, cands.labels(capability, sections), strict=True):
            engines.append(await runner.measure(capability, section, name))
    result = BenchResult(engines, inputs, judge=None)
    if candidates.judge is not None and candidates.tts:
        result.judge = cands.price_key("stt", candidates.judge)
        advance(f"loading the judge, stt {result.judge}")
        try:
            runner.judge = cands.load("stt", candidates.judge, models)
        except ENGINE_ERRORS as exc:
            result.judge_problem = f"{result.judge} could not be loaded: {exc}"
            result.judge = None
    try:
        tts_names = cands.labels("tts", candidates.tts)
        for section, name in zip(candidates.tts, tts_names, strict=True):
            engines.append(await runner.measure("tts", section, name))
    finally:
        if runner.judge is not None:
            await close_engine(runner.judge)
    return result


def turn_costs(result: BenchResult) -> list[dict[str, Any]]:
    """Estimated cost of one turn for each working combination: one corpus clip transcribed, one
    reply of the LLM's mean length, and that reply spoken (at the TTS's cost per character)."""
    rows = []
    for stt in result.of("stt"):
        for llm in result.of("llm"):
            for tts in result.of("tts"):
                clip = stt.figures.get("cost_per_clip_usd")
                reply = llm.figures.get("cost_per_reply_usd")
                per_char = tts.figures.get("cost_per_char_usd")
                chars = llm.figures.get("reply_chars")
                if clip is None or reply is None or per_char is None or chars is None:
                    continue
                cost = round(clip + reply + per_char * chars, 8)
                rows.append({"stt": stt.name, "llm": llm.name, "tts": tts.name, "cost_usd": cost})
    return rows
