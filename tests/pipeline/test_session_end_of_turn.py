"""TurnSession with an end-of-turn model: the turn ends on the model's word, or after the fallback.

The first tests use a scripted model (a literal probability) with the fake engines; the last ones
(marker ``models``) the real Silero VAD and smart-turn on a real LibriVox sentence, whole and cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from tests.fakes import (
    SYSTEM_PROMPT,
    EventLog,
    Fakes,
    bounded,
    concat,
    feed,
    make_session,
    silence,
    tone,
)
from voxgate.core.audio import read_wav
from voxgate.core.capabilities import EndOfTurnModel, Float32Array, Int16Array
from voxgate.core.config import CharacterSettings, TurnSettings
from voxgate.core.events import SpeechStopped, TurnDone
from voxgate.core.turns import ClientCommit
from voxgate.models import ModelStore
from voxgate.pipeline import Engines
from voxgate.pipeline.session import TurnSession
from voxgate.speech_corpus import INSTALL_HINT, librivox_clips

RATE_HZ = 16_000


class ScriptedModel:
    """Answers ``answer`` (or raises it), and remembers how much audio each call heard."""

    sample_rate_hz = RATE_HZ

    def __init__(self, answer: float | Exception, inner: EndOfTurnModel | None = None) -> None:
        self.answer = answer
        self.inner = inner
        self.heard_ms: list[float] = []
        self.answers: list[float] = []
        self.finished = 0

    def complete_probability(self, audio: Float32Array) -> float:
        self.heard_ms.append(len(audio) / RATE_HZ * 1000)
        try:
            if isinstance(self.answer, Exception):
                raise self.answer
            inner = self.inner
            probability = self.answer if inner is None else inner.complete_probability(audio)
            self.answers.append(probability)
            return probability
        finally:
            self.finished += 1


Open = Callable[..., tuple[TurnSession, EventLog]]


@pytest.fixture
async def open_session() -> AsyncIterator[Open]:
    opened: list[tuple[TurnSession, Engines]] = []

    def open_(
        model: EndOfTurnModel, engines: Engines | None = None, **turn: object
    ) -> tuple[TurnSession, EventLog]:
        engines = engines or Fakes().engines()
        engines.end_of_turn = model
        session = make_session(engines, speculative_start_ms=64, **turn)
        opened.append((session, engines))
        return session, EventLog(session)

    yield open_
    for session, engines in opened:
        await session.close()
        engines.close()


async def wait_calls(model: ScriptedModel, count: int = 1) -> None:
    """Until the model has answered at least ``count`` questions and no other is under way.

    Every question about the audio fed so far was already put (the session asks as it reads the
    audio) and the model thread takes them back to back, so a quiet spell means all are done."""
    async with asyncio.timeout(30):
        quiet_since = None
        while quiet_since is None or asyncio.get_running_loop().time() - quiet_since < 0.5:
            await asyncio.sleep(0.01)  # (a thread's state: no event to await)
            busy = model.finished < max(count, len(model.heard_ms))
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = asyncio.get_running_loop().time()


@bounded(10)
async def test_a_sure_answer_ends_the_turn_before_the_fixed_silence(open_session: Open) -> None:
    model = ScriptedModel(0.9)
    session, log = open_session(model)
    await feed(session, concat(tone(1000), silence(300)))
    done = await log.wait_for_event(TurnDone)  # no more audio needed: the model ended the turn
    assert len(model.heard_ms) == 1
    # It heard the speech and the 192 ms of silence so far (plus the pre-roll).
    assert 1000 + 192 <= model.heard_ms[0] < 1000 + 300 + 400
    assert done.timings.speculative is True  # the reply started at 64 ms was kept
    assert log.kinds()[:2] == ["SpeechStarted", "SpeechStopped"]


@bounded(10)
async def test_an_unsure_answer_waits_for_the_fallback(open_session: Open) -> None:
    model = ScriptedModel(0.2)
    session, log = open_session(model, end_of_turn_fallback_ms=1000)
    await feed(session, concat(tone(1000), silence(300)))
    await wait_calls(model)
    await feed(session, silence(600))  # 900 ms: past the fixed 500, short of the fallback
    await asyncio.sleep(0.05)
    assert log.of(SpeechStopped) == []
    await feed(session, silence(200))
    await log.wait_for_event(TurnDone)
    assert len(model.heard_ms) == 1


@bounded(10)
async def test_a_failing_model_leaves_the_turn_to_the_fallback(open_session: Open) -> None:
    model = ScriptedModel(RuntimeError("onnxruntime fell over"))
    session, log = open_session(model)
    await feed(session, concat(tone(1000), silence(300)))
    await wait_calls(model)
    assert log.of(SpeechStopped) == []
    await feed(session, silence(800))
    await log.wait_for_event(TurnDone)


@bounded(10)
async def test_switched_off_the_fixed_silence_ends_the_turn(open_session: Open) -> None:
    model = ScriptedModel(0.9)
    session, log = open_session(model, semantic_end_of_turn=False, end_of_turn_silence_ms=500)
    await feed(session, concat(tone(1000), silence(450)))
    await asyncio.sleep(0.1)
    assert log.of(SpeechStopped) == []
    await feed(session, silence(100))
    await log.wait_for_event(TurnDone)
    assert model.heard_ms == []


@bounded(10)
async def test_a_short_utterance_is_not_given_to_the_model(open_session: Open) -> None:
    model = ScriptedModel(0.9)
    session, log = open_session(model, end_of_turn_min_speech_ms=800)
    await feed(session, concat(tone(400), silence(550)))
    await log.wait_for_event(TurnDone)
    assert model.heard_ms == []


@bounded(10)
async def test_a_client_committed_session_never_asks_the_model() -> None:
    model = ScriptedModel(0.9)
    engines = Fakes().engines()
    engines.end_of_turn = model
    character = CharacterSettings(system_prompt=SYSTEM_PROMPT)
    session = TurnSession(engines, TurnSettings(), character, detection=ClientCommit())
    log = EventLog(session)
    try:
        await feed(session, concat(tone(1000), silence(1500)))
        await asyncio.sleep(0.1)
        assert model.heard_ms == []
        assert log.of(SpeechStopped) == []
        assert session.commit_turn()
        await log.wait_for_event(TurnDone)
    finally:
        await session.close()
        engines.close()


# --- the real model on real speech -----------------------------------------------------------


@pytest.fixture(scope="module")
def real_parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, EndOfTurnModel]:
    from voxgate.core.config import load_settings
    from voxgate.providers.smart_turn import SmartTurn

    settings = load_settings()
    vad_path = str(ModelStore(settings.models_dir, show_progress=False).resolve("silero-vad"))
    store = ModelStore(tmp_path_factory.mktemp("models"), show_progress=False)
    return vad_path, SmartTurn(str(store.resolve("smart-turn-v3.2")))


Real = tuple[ScriptedModel, TurnSession, EventLog]


@pytest.fixture
async def real(open_session: Open, real_parts: tuple[str, EndOfTurnModel]) -> Real:
    """A session with the real VAD and the real model (recorded), fake STT, LLM and TTS."""
    from voxgate.providers.silero_vad import SileroVAD

    engines = Fakes().engines()
    engines.vad = SileroVAD(real_parts[0])
    model = ScriptedModel(0.0, inner=real_parts[1])
    return (model, *open_session(model, engines, **REAL_TURN))


# The sentence has a pause ~1 s in, where the model leans towards "finished" (~0.8): past the
# speech needed, so only the pauses these tests are about are asked.
REAL_TURN: dict[str, object] = {
    "end_of_turn_threshold": 0.7,
    "end_of_turn_fallback_ms": 1000,
    "end_of_turn_min_speech_ms": 1500,
}


def sentence_0890() -> Int16Array:
    """ "unless to be rather cold hearted and rather selfish is to be ill disposed" """
    clips = [clip for clip in librivox_clips() if clip.name.endswith("0890")]
    if not clips:
        pytest.skip(f"no LibriVox clips: {INSTALL_HINT}")
    samples, rate = read_wav(clips[0].path)
    assert rate == RATE_HZ
    return samples


@pytest.mark.models
@bounded(60)
async def test_real_model_ends_a_complete_sentence_early(real: Real) -> None:
    model, session, log = real
    whole = sentence_0890()
    await feed(session, concat(whole, silence(400)))
    await wait_calls(model)
    await log.wait_for_event(TurnDone, timeout_s=20)  # 400 ms fed: only the model can end it
    assert model.answers[-1] >= 0.7


@pytest.mark.models
@bounded(60)
async def test_real_model_waits_when_the_sentence_stops_mid_way(real: Real) -> None:
    model, session, log = real
    cut = sentence_0890()[: int(3.88 * RATE_HZ)]  # "... and rather selfish is"
    await feed(session, concat(cut, silence(400)))
    await wait_calls(model)  # (it may have been asked at a pause within it before)
    assert model.answers[-1] < 0.3
    assert log.of(SpeechStopped) == []
    # The user goes on after the pause: still one turn, the whole sentence.
    rest = sentence_0890()[int(3.88 * RATE_HZ) :]
    asked = len(model.heard_ms)
    await feed(session, concat(rest, silence(400)))
    await wait_calls(model, asked + 1)
    done = await log.wait_for_event(TurnDone, timeout_s=20)
    assert model.answers[-1] >= 0.7
    assert len(log.of(SpeechStopped)) == 1
    assert done.timings.speculative is True
