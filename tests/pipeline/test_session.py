"""TurnSession with fake engines: the turn engine's logic, fast and without real models.

"Speech" is a tone burst and silence is zeros (see FakeVAD); audio is fed as fast as the session
takes it, which is fine because the end of a turn is decided by audio chunks, not wall clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np
import pytest

from tests.fakes import (
    RATE_HZ,
    SYSTEM_PROMPT,
    EventLog,
    FakeLLM,
    Fakes,
    FakeSTT,
    FakeTTS,
    bounded,
    concat,
    describe_length,
    feed,
    llm_failure,
    make_session,
    pcm_bytes,
    silence,
    stt_failure,
    tone,
    wait_until,
)
from voxgate.core.capabilities import ChatMessage, Int16Array
from voxgate.core.config import CharacterSettings
from voxgate.core.errors import ErrorCode
from voxgate.core.events import (
    ErrorEvent,
    Event,
    Interrupted,
    ReplyAudio,
    ReplyStarted,
    ReplyTextDelta,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    TurnDone,
)
from voxgate.pipeline.drive import TurnResult, spoken_turn
from voxgate.pipeline.engines import Engines
from voxgate.pipeline.history import Exchange
from voxgate.pipeline.reply import ERROR_REPLY_TEXT
from voxgate.pipeline.session import TurnSession

CHUNK_MS = 32.0
PLAYED_OUT_MS = 1e9
SYSTEM = ChatMessage("system", SYSTEM_PROMPT)
STORY = [
    "First sentence here. ",
    "Second one is here. ",
    "Third one. ",
    "Fourth one. ",
    "Fifth one. ",
    "Sixth one.",
]
STORY_TEXT = "".join(STORY)


def user(text: str) -> ChatMessage:
    return ChatMessage("user", text)


def assistant(text: str) -> ChatMessage:
    return ChatMessage("assistant", text)


def utterance(speech_ms: float = 1000, lead_ms: float = 300) -> Int16Array:
    return concat(silence(lead_ms), tone(speech_ms))


def turn_ids(events: list[Event]) -> set[int]:
    return {e.turn_id for e in events if isinstance(e, ReplyStarted | ReplyAudio | TurnDone)}


@dataclass
class Rig:
    fakes: Fakes
    engines: Engines
    session: TurnSession

    async def turn(self, audio: Int16Array | None = None, rate_hz: int = RATE_HZ) -> TurnResult:
        """One spoken turn (``utterance()`` by default) and what came back; the reply counts
        as played out (audio is fed faster than real time, so the real-time playout estimate
        would still be running when the next turn starts, and that would be a barge-in)."""
        audio = utterance() if audio is None else audio
        result = await spoken_turn(self.session, audio, rate_hz, realtime=False, timeout_s=5)
        for event in result.events:
            if isinstance(event, TurnDone):
                self.session.report_playout(event.turn_id, PLAYED_OUT_MS)
        return result


OpenRig = Callable[..., Rig]


@pytest.fixture
async def open_rig() -> AsyncIterator[OpenRig]:
    """``open_rig(fakes, engines=None, output_rate_hz=..., character=..., **turn_settings)``."""
    rigs: list[Rig] = []

    def open_(
        fakes: Fakes | None = None,
        *,
        engines: Engines | None = None,
        output_rate_hz: int = 16_000,
        character: CharacterSettings | None = None,
        **turn: object,
    ) -> Rig:
        fakes = fakes or Fakes()
        engines = engines or fakes.engines()
        session = make_session(engines, output_rate_hz=output_rate_hz, character=character, **turn)
        rigs.append(Rig(fakes, engines, session))
        return rigs[-1]

    yield open_
    for rig in rigs:
        await rig.session.close()
    for engines in {id(rig.engines): rig.engines for rig in rigs}.values():
        engines.close()


# ---------------------------------------------------------------------------------------------
# A spoken turn


@bounded(10)
async def test_partial_transcripts_while_talking_then_the_final_one(open_rig: OpenRig) -> None:
    rig = open_rig(partial_transcripts=True, partial_interval_ms=300, speculative_start_ms=None)

    result = await rig.turn(utterance(speech_ms=1500))

    transcripts = [e for e in result.events if isinstance(e, Transcript)]
    partials = [t for t in transcripts if not t.final]
    assert len(partials) >= 2
    assert transcripts[-1].final and transcripts[-1].text == result.transcript
    stopped_at = next(i for i, e in enumerate(result.events) if isinstance(e, SpeechStopped))
    assert all(result.events.index(p) < stopped_at for p in partials)
    lengths = [int(p.text.split()[3]) for p in partials]  # "I spoke for N milliseconds"
    assert lengths == sorted(lengths) and lengths[-1] < int(result.transcript.split()[3])


@bounded(10)
async def test_no_partial_transcripts_unless_asked(open_rig: OpenRig) -> None:
    rig = open_rig(speculative_start_ms=None)
    result = await rig.turn(utterance(speech_ms=1500))
    assert [t.final for t in result.events if isinstance(t, Transcript)] == [True]


@bounded(10)
async def test_a_spoken_turn_events_in_order(open_rig: OpenRig) -> None:
    fakes = Fakes(
        stt=FakeSTT(["what time is it"]),
        llm=FakeLLM(["It", " is", " noon", ".", " Anything", " else", "?"]),
        tts=FakeTTS(sample_rate_hz=22_050, ms_per_word=100),
    )
    rig = open_rig(fakes, output_rate_hz=24_000, speculative_start_ms=None)

    result = await rig.turn(utterance(speech_ms=1000, lead_ms=300))

    kinds = [type(e) for e in result.events]
    assert kinds[:4] == [SpeechStarted, SpeechStopped, Transcript, ReplyStarted]
    assert kinds[-1] is TurnDone
    middle = kinds[4:-1]
    assert set(middle) == {ReplyTextDelta, ReplyAudio}
    assert middle.index(ReplyTextDelta) < middle.index(ReplyAudio)

    started, stopped, transcript, reply_started = result.events[:4]
    assert isinstance(started, SpeechStarted) and isinstance(stopped, SpeechStopped)
    assert started.at_ms == pytest.approx(300, abs=CHUNK_MS)
    assert stopped.at_ms == pytest.approx(1300, abs=CHUNK_MS)
    assert transcript == Transcript("what time is it", final=True)
    assert reply_started == ReplyStarted(turn_id=1)

    deltas = [e for e in result.events if isinstance(e, ReplyTextDelta)]
    assert "".join(d.text for d in deltas) == "It is noon. Anything else?"
    audio = [e for e in result.events if isinstance(e, ReplyAudio)]
    # One chunk per word; the first chunk of each sentence says so.
    assert [(a.sentence_index, a.sentence_start) for a in audio] == [
        (0, True),
        (0, False),
        (0, False),
        (1, True),
        (1, False),
    ]
    assert [a.sentence_text for a in audio if a.sentence_start] == [
        "It is noon.",
        "Anything else?",
    ]
    assert {a.turn_id for a in audio} == {1}
    assert {a.sample_rate_hz for a in audio} == {24_000}
    for chunk in audio:  # 100 ms of TTS audio at 22.05 kHz, resampled to 24 kHz
        assert len(chunk.pcm) // 2 == pytest.approx(2400, abs=2)

    done = result.events[-1]
    assert isinstance(done, TurnDone)
    assert (done.turn_id, done.user_text, done.reply_text, done.interrupted) == (
        1,
        "what time is it",
        "It is noon. Anything else?",
        False,
    )
    timings = done.timings
    filled = [
        timings.end_of_turn_wait_ms,
        timings.stt_ms,
        timings.llm_first_token_ms,
        timings.first_sentence_ms,
        timings.tts_first_audio_ms,
        timings.speech_end_to_first_audio_ms,
        timings.turn_end_to_first_audio_ms,
    ]
    assert all(t is not None and t >= 0 for t in filled), timings
    assert timings.speculative is False
    assert result.errors == []

    # The STT got the whole utterance: speech, a little pre-roll before it, a short tail.
    assert fakes.stt.call_ms == [pytest.approx(1300 + 2 * CHUNK_MS, abs=CHUNK_MS)]
    assert fakes.tts.sentences == ["It is noon.", "Anything else?"]


@bounded(10)
async def test_history_keeps_the_exchange_for_the_next_turn(open_rig: OpenRig) -> None:
    fakes = Fakes(
        stt=FakeSTT(["What is two plus two?", "And times three?"]),
        llm=FakeLLM(["Four."], ["Twelve", "."]),
    )
    rig = open_rig(fakes)

    first = await rig.turn()
    second = await rig.turn()

    assert (first.transcript, first.reply_text) == ("What is two plus two?", "Four.")
    assert (second.transcript, second.reply_text) == ("And times three?", "Twelve.")
    assert rig.session.history.exchanges == [
        Exchange("What is two plus two?", "Four."),
        Exchange("And times three?", "Twelve."),
    ]
    assert fakes.llm.calls == [
        [SYSTEM, user("What is two plus two?")],
        [SYSTEM, user("What is two plus two?"), assistant("Four."), user("And times three?")],
    ]
    assert turn_ids(first.events) == {1} and turn_ids(second.events) == {2}
    # The first reply was over (played out) when the second turn began: nothing interrupted.
    assert not any(isinstance(e, Interrupted) for e in first.events + second.events)


# ---------------------------------------------------------------------------------------------
# Speculation


@bounded(10)
async def test_speculative_reply_starts_before_the_turn_ends(open_rig: OpenRig) -> None:
    fakes = Fakes(llm=FakeLLM(["Sure thing."]))
    rig = open_rig(fakes, speculative_start_ms=160, end_of_turn_silence_ms=500)
    log = EventLog(rig.session)

    await feed(rig.session, concat(utterance(), silence(300)))
    await wait_until(lambda: fakes.llm.completed == 1)
    # Transcribed and answered during the silence wait, but nothing shown yet.
    assert len(fakes.stt.calls) == 1
    assert log.kinds() == ["SpeechStarted"]

    await feed(rig.session, silence(500))
    done = await log.wait_for_event(TurnDone)
    assert log.kinds()[:4] == ["SpeechStarted", "SpeechStopped", "Transcript", "ReplyStarted"]
    assert done.reply_text == "Sure thing."
    assert done.timings.speculative is True
    assert len(fakes.stt.calls) == 1  # the speculative transcript was used
    assert len(fakes.llm.calls) == 1


@bounded(10)
async def test_speculative_reply_is_discarded_when_the_user_goes_on(open_rig: OpenRig) -> None:
    fakes = Fakes(llm=FakeLLM(STORY, delay_s=0.1))
    rig = open_rig(fakes, speculative_start_ms=160, end_of_turn_silence_ms=500)
    log = EventLog(rig.session)

    await feed(rig.session, concat(utterance(speech_ms=1000), silence(300)))
    await wait_until(lambda: len(fakes.llm.calls) == 1)  # the speculative reply is under way
    await feed(rig.session, concat(tone(1000), silence(600)))  # ... but the user goes on
    done = await log.wait_for_event(TurnDone)
    await wait_until(lambda: fakes.llm.closed_early == 1)

    # The final turn's transcript covers the whole utterance; the first guess left no trace.
    assert len(fakes.stt.calls) == 2
    short, whole = fakes.stt.call_ms
    assert whole >= short + 1300 - CHUNK_MS
    transcripts = log.of(Transcript)
    assert transcripts == [Transcript(describe_length(fakes.stt.calls[1]), final=True)]
    assert done.user_text == transcripts[0].text
    assert done.reply_text == STORY_TEXT
    assert log.kinds().count("SpeechStarted") == 1
    assert log.kinds().count("SpeechStopped") == 1
    assert turn_ids(log.events) == {done.turn_id}
    assert fakes.llm.completed == 1
    assert rig.session.history.exchanges == [Exchange(done.user_text, STORY_TEXT)]
    assert done.timings.speculative is True


@bounded(10)
async def test_without_speculation_stt_waits_for_the_end_of_turn(open_rig: OpenRig) -> None:
    fakes = Fakes()
    rig = open_rig(fakes, speculative_start_ms=None, end_of_turn_silence_ms=500)
    log = EventLog(rig.session)

    await feed(rig.session, concat(utterance(), silence(450)))
    await asyncio.sleep(0.05)
    assert fakes.stt.calls == []
    await feed(rig.session, silence(100))
    done = await log.wait_for_event(TurnDone)
    assert len(fakes.stt.calls) == 1
    assert done.timings.speculative is False


# ---------------------------------------------------------------------------------------------
# Barge-in


@bounded(10)
async def test_barge_in_stops_the_reply_and_keeps_what_was_heard(open_rig: OpenRig) -> None:
    fakes = Fakes(
        stt=FakeSTT(["Tell me a story", "Stop"]),
        llm=FakeLLM(STORY, ["Okay."], delay_s=0.1),
        tts=FakeTTS(ms_per_word=100),
    )
    rig = open_rig(fakes, speculative_start_ms=None, barge_in_min_speech_ms=200)
    log = EventLog(rig.session)

    await feed(rig.session, concat(utterance(), silence(600)))
    first_audio = await log.wait_for_event(ReplyAudio)
    turn_id = first_audio.turn_id
    # The device played 200 ms: two of the three words of "First sentence here."
    rig.session.report_playout(turn_id, 200.0)
    await feed(rig.session, tone(400))

    interrupted = await log.wait_for_event(Interrupted)
    assert interrupted == Interrupted(turn_id, heard_text="First sentence")
    await wait_until(lambda: fakes.llm.closed_early == 1)
    assert fakes.llm.completed == 0
    assert rig.session.history.exchanges == [
        Exchange("Tell me a story", "First sentence", interrupted=True)
    ]
    # After the interruption the old reply only says it is done.
    after = log.events[log.events.index(interrupted) + 1 :]
    assert [type(e) for e in after if getattr(e, "turn_id", None) == turn_id] == [TurnDone]
    done = log.of(TurnDone)[0]
    assert (done.turn_id, done.reply_text, done.interrupted) == (turn_id, "First sentence", True)

    # The interruption is the next turn, and the LLM sees only what was heard.
    await feed(rig.session, silence(600))
    second = await log.wait_for_event(TurnDone, count=2)
    assert (second.user_text, second.reply_text, second.interrupted) == ("Stop", "Okay.", False)
    assert fakes.llm.calls[1] == [
        SYSTEM,
        user("Tell me a story"),
        assistant("First sentence"),
        user("Stop"),
    ]


@bounded(10)
async def test_barge_in_during_playout_amends_the_history(open_rig: OpenRig) -> None:
    fakes = Fakes(
        stt=FakeSTT(["Tell me a story", "Wait"]),
        llm=FakeLLM(STORY, ["Yes?"]),
        tts=FakeTTS(ms_per_word=100),
    )
    rig = open_rig(fakes, speculative_start_ms=None)
    log = EventLog(rig.session)

    await feed(rig.session, concat(utterance(), silence(600)))
    done = await log.wait_for_event(TurnDone)  # produced in full, still being played
    assert rig.session.history.exchanges == [Exchange("Tell me a story", STORY_TEXT)]
    # 500 ms played: "First sentence here." (300 ms) and half of "Second one is here."
    rig.session.report_playout(done.turn_id, 500.0)
    await feed(rig.session, tone(400))

    heard = "First sentence here. Second one"
    assert await log.wait_for_event(Interrupted) == Interrupted(done.turn_id, heard)
    assert rig.session.history.exchanges == [Exchange("Tell me a story", heard, interrupted=True)]
    assert len(log.of(TurnDone)) == 1  # the turn was already reported done

    await feed(rig.session, silence(600))
    await log.wait_for_event(TurnDone, count=2)
    assert fakes.llm.calls[1][-2:] == [assistant(heard), user("Wait")]


@bounded(10)
async def test_a_short_sound_does_not_barge_in(open_rig: OpenRig) -> None:
    fakes = Fakes(llm=FakeLLM(STORY, delay_s=0.05))
    rig = open_rig(fakes, speculative_start_ms=None, barge_in_min_speech_ms=300)
    log = EventLog(rig.session)

    await feed(rig.session, concat(utterance(), silence(600)))
    await log.wait_for_event(ReplyAudio)
    await feed(rig.session, tone(200))  # in speech, but under barge_in_min_speech_ms
    await asyncio.sleep(0.05)
    assert log.of(Interrupted) == []
    assert fakes.llm.closed_early == 0


@bounded(10)
async def test_without_barge_in_speech_over_the_reply_is_ignored(open_rig: OpenRig) -> None:
    fakes = Fakes(
        stt=FakeSTT(["Tell me a story"]),
        llm=FakeLLM(STORY, delay_s=0.05),
        tts=FakeTTS(ms_per_word=300),
    )
    rig = open_rig(fakes, barge_in=False, speculative_start_ms=160)
    log = EventLog(rig.session)

    await feed(rig.session, concat(utterance(), silence(600)))
    await log.wait_for_event(ReplyAudio)
    await feed(rig.session, concat(tone(1000), silence(600)))  # talking over the reply

    done = await log.wait_for_event(TurnDone)
    assert (done.reply_text, done.interrupted) == (STORY_TEXT, False)
    assert log.of(Interrupted) == []
    assert log.kinds().count("SpeechStarted") == 1
    assert log.kinds().count("SpeechStopped") == 1
    assert len(fakes.stt.calls) == 1
    assert (fakes.llm.completed, fakes.llm.closed_early) == (1, 0)


@bounded(10)
async def test_without_barge_in_speech_begun_over_the_reply_is_no_turn(open_rig: OpenRig) -> None:
    # The reply ends while the user (or the echo of the reply) is still talking over it.
    fakes = Fakes(tts=FakeTTS(ms_per_word=2000))
    rig = open_rig(fakes, barge_in=False, speculative_start_ms=160)
    log = EventLog(rig.session)

    await feed(rig.session, concat(utterance(), silence(600)))
    done = await log.wait_for_event(TurnDone)
    await feed(rig.session, tone(1000))
    rig.session.report_playout(done.turn_id, 10_000.0)  # the reply has been played out
    await feed(rig.session, silence(600))
    await rig.session.wait_idle()
    await asyncio.sleep(0.05)

    assert log.kinds().count("SpeechStarted") == 1
    assert log.kinds().count("SpeechStopped") == 1
    assert len(fakes.stt.calls) == 1
    assert len(log.of(TurnDone)) == 1

    # The next utterance, begun after the reply, is a turn again.
    await feed(rig.session, concat(utterance(), silence(600)))
    await log.wait_for_event(TurnDone, count=2)
    assert log.kinds().count("SpeechStarted") == 2


# ---------------------------------------------------------------------------------------------
# Typed turns and greetings


@bounded(10)
async def test_a_typed_turn(open_rig: OpenRig) -> None:
    fakes = Fakes(llm=FakeLLM(["Hello", " to you", "."]))
    rig = open_rig(fakes)
    log = EventLog(rig.session)

    await rig.session.say("  hi there  ")
    done = await log.wait_for_event(TurnDone)

    assert log.kinds() == ["ReplyStarted"] + ["ReplyTextDelta"] * 3 + ["ReplyAudio"] * 3 + [
        "TurnDone"
    ]
    assert (done.user_text, done.reply_text) == ("hi there", "Hello to you.")
    assert fakes.llm.calls == [[SYSTEM, user("hi there")]]
    assert fakes.stt.calls == []
    assert done.timings.stt_ms is None and done.timings.end_of_turn_wait_ms is None
    assert done.timings.llm_first_token_ms is not None
    assert rig.session.history.exchanges == [Exchange("hi there", "Hello to you.")]


@bounded(10)
async def test_an_empty_typed_turn_is_refused(open_rig: OpenRig) -> None:
    fakes = Fakes()
    rig = open_rig(fakes)
    log = EventLog(rig.session)

    await rig.session.say("   ")
    error = await log.wait_for_event(ErrorEvent)
    assert error.code == ErrorCode.BAD_REQUEST
    await asyncio.sleep(0.02)
    assert fakes.llm.calls == []
    assert log.kinds() == ["ErrorEvent"]


@bounded(10)
async def test_a_typed_turn_interrupts_the_reply_in_progress(open_rig: OpenRig) -> None:
    fakes = Fakes(llm=FakeLLM(STORY, ["Fine."], delay_s=0.05))
    rig = open_rig(fakes)
    log = EventLog(rig.session)

    await rig.session.say("Tell me a story")
    await log.wait_for_event(ReplyAudio)
    rig.session.report_playout(1, 300.0)
    await rig.session.say("Never mind")

    second = await log.wait_for_event(TurnDone, count=2)
    first = log.of(TurnDone)[0]
    assert (first.turn_id, first.reply_text, first.interrupted) == (
        1,
        "First sentence here.",
        True,
    )
    assert log.of(Interrupted) == [Interrupted(1, "First sentence here.")]
    assert (second.turn_id, second.reply_text) == (2, "Fine.")
    assert fakes.llm.calls[1][-2:] == [assistant("First sentence here."), user("Never mind")]


@bounded(10)
async def test_greeting_with_a_first_message_needs_no_llm(open_rig: OpenRig) -> None:
    fakes = Fakes()
    greeting = "Hi! I am **Vox**. Ask me anything."
    character = CharacterSettings(system_prompt=SYSTEM_PROMPT, first_message=greeting)
    rig = open_rig(fakes, character=character)
    log = EventLog(rig.session)

    await rig.session.greet()
    done = await log.wait_for_event(TurnDone)

    spoken = "Hi! I am Vox. Ask me anything."
    assert fakes.llm.calls == []
    assert fakes.tts.sentences == [spoken]
    assert log.events[0] == ReplyStarted(1)
    assert {e.sentence_text for e in log.of(ReplyAudio)} == {spoken}
    assert (done.user_text, done.reply_text, done.interrupted) == ("", spoken, False)
    assert rig.session.history.exchanges == [Exchange(None, spoken)]

    # The greeting, once played, is part of the conversation.
    rig.session.report_playout(done.turn_id, PLAYED_OUT_MS)
    await rig.session.say("Hello")
    await log.wait_for_event(TurnDone, count=2)
    assert fakes.llm.calls == [[SYSTEM, assistant(spoken), user("Hello")]]


@bounded(10)
async def test_greeting_written_by_the_llm(open_rig: OpenRig) -> None:
    fakes = Fakes(llm=FakeLLM(["Hello", ", nice to meet you", "!"]))
    character = CharacterSettings(system_prompt=SYSTEM_PROMPT, greeting_prompt="Greet warmly.")
    rig = open_rig(fakes, character=character)
    log = EventLog(rig.session)

    await rig.session.greet()
    done = await log.wait_for_event(TurnDone)

    assert fakes.llm.calls == [[SYSTEM, user("Greet warmly.")]]
    assert done.reply_text == "Hello, nice to meet you!"
    assert "".join(e.text for e in log.of(ReplyTextDelta)) == "Hello, nice to meet you!"
    assert rig.session.history.exchanges == [Exchange(None, "Hello, nice to meet you!")]


@bounded(10)
async def test_no_greeting_configured(open_rig: OpenRig) -> None:
    fakes = Fakes()
    rig = open_rig(fakes)
    log = EventLog(rig.session)

    await rig.session.greet()
    await rig.session.say("Hi")
    done = await log.wait_for_event(TurnDone)
    assert done.turn_id == 1
    assert len(fakes.llm.calls) == 1


# ---------------------------------------------------------------------------------------------
# Failures


@bounded(10)
async def test_empty_transcript_means_no_speech_and_no_reply(open_rig: OpenRig) -> None:
    fakes = Fakes(stt=FakeSTT(["   "]))
    rig = open_rig(fakes)

    result = await rig.turn()

    assert [e.code for e in result.errors] == [ErrorCode.NO_SPEECH]
    assert [type(e) for e in result.events] == [SpeechStarted, SpeechStopped, ErrorEvent]
    assert fakes.llm.calls == []
    assert rig.session.history.exchanges == []


@bounded(10)
async def test_llm_failure_is_reported_and_an_apology_spoken(open_rig: OpenRig) -> None:
    fakes = Fakes(llm=FakeLLM([llm_failure()]))
    rig = open_rig(fakes)

    result = await rig.turn()

    assert [(e.code, e.turn_id) for e in result.errors] == [(ErrorCode.LLM_FAILED, 1)]
    assert fakes.tts.sentences == [ERROR_REPLY_TEXT]
    assert result.reply_text == ERROR_REPLY_TEXT
    assert len(result.pcm) > 0


@bounded(10)
async def test_llm_failure_mid_reply_keeps_what_was_written(open_rig: OpenRig) -> None:
    fakes = Fakes(llm=FakeLLM(["Partly answered. ", "And then", llm_failure()]))
    rig = open_rig(fakes)

    result = await rig.turn()

    assert [e.code for e in result.errors] == [ErrorCode.LLM_FAILED]
    assert fakes.tts.sentences == ["Partly answered.", "And then"]
    assert result.reply_text == "Partly answered. And then"


@bounded(10)
async def test_an_engine_bug_ends_the_reply_with_an_internal_error_not_the_session(
    open_rig: OpenRig,
) -> None:
    fakes = Fakes(llm=FakeLLM(["Fine so far. ", RuntimeError("bug in the engine")], ["Okay."]))
    rig = open_rig(fakes)

    broken = await rig.turn()
    after = await rig.turn()

    assert [e.code for e in broken.errors] == [ErrorCode.INTERNAL]
    assert broken.timings is not None and broken.reply_text == "Fine so far."
    assert after.reply_text == "Okay." and not after.errors


@pytest.mark.parametrize("pieces", [[], ["", "  ", "\n"]], ids=["nothing", "whitespace"])
@bounded(10)
async def test_an_empty_llm_reply_speaks_the_fallback(open_rig: OpenRig, pieces: list[str]) -> None:
    fakes = Fakes(llm=FakeLLM(pieces))
    rig = open_rig(fakes, empty_reply_text="I have nothing to add.")

    result = await rig.turn()

    assert [(e.code, e.turn_id) for e in result.errors] == [(ErrorCode.LLM_EMPTY, 1)]
    assert fakes.tts.sentences == ["I have nothing to add."]
    assert result.reply_text == "I have nothing to add."


@bounded(10)
async def test_stt_failure_is_reported_and_the_next_turn_works(open_rig: OpenRig) -> None:
    fakes = Fakes(stt=FakeSTT([stt_failure(), "second try"]))
    rig = open_rig(fakes)

    failed = await rig.turn()
    assert [(e.code, e.turn_id) for e in failed.errors] == [(ErrorCode.STT_FAILED, 1)]
    assert not any(isinstance(e, ReplyStarted | Transcript) for e in failed.events)
    assert fakes.llm.calls == []

    ok = await rig.turn()
    assert (ok.transcript, ok.reply_text, ok.errors) == ("second try", "Okay.", [])
    assert fakes.llm.calls == [[SYSTEM, user("second try")]]


async def push_bytes(session: TurnSession, data: bytes, rate_hz: int, size: int) -> None:
    for offset in range(0, len(data), size):
        await session.push_audio(data[offset : offset + size], rate_hz)


@bounded(20)
async def test_bad_audio_is_reported_and_the_session_goes_on(open_rig: OpenRig) -> None:
    fakes = Fakes(stt=FakeSTT(default=lambda audio: "good turn"))
    rig = open_rig(fakes)
    session = rig.session
    log = EventLog(session)

    await session.push_audio(b"\x01", RATE_HZ)  # a lone byte
    await session.push_audio(b"", RATE_HZ)
    garbage = np.random.default_rng(3).integers(0, 256, 16_001, dtype=np.uint8).tobytes()
    await session.push_audio(garbage, RATE_HZ)  # half a second of noise, odd length
    for rate in (3, 0, -16_000, 1000, 10**6):
        await session.push_audio(pcm_bytes(tone(100)), rate)
    await feed(session, silence(1000))
    await session.wait_idle()

    errors = log.of(ErrorEvent)
    assert [e.code for e in errors] == [ErrorCode.BAD_AUDIO] * 5
    assert all("Hz" in e.message for e in errors)

    # A good turn after all that, in frames of odd byte counts, is answered.
    before = len(log.of(TurnDone))
    await push_bytes(session, pcm_bytes(concat(utterance(), silence(1000))), RATE_HZ, 641)
    done = await log.wait_for_event(TurnDone, count=before + 1)
    assert (done.user_text, done.reply_text, done.interrupted) == ("good turn", "Okay.", False)
    assert fakes.stt.call_ms[-1] >= 1000
    assert [e.code for e in log.of(ErrorEvent)] == [ErrorCode.BAD_AUDIO] * 5


@bounded(10)
async def test_audio_at_another_rate_is_resampled(open_rig: OpenRig) -> None:
    fakes = Fakes()
    rig = open_rig(fakes, speculative_start_ms=None)

    result = await rig.turn(concat(silence(300, 48_000), tone(1000, 48_000)), rate_hz=48_000)

    assert result.reply_text == "Okay."
    assert fakes.stt.call_ms == [pytest.approx(1300 + 2 * CHUNK_MS, abs=2 * CHUNK_MS)]


# ---------------------------------------------------------------------------------------------
# Robustness


@bounded(60)
async def test_a_ten_minute_monologue_is_cut_into_turns(open_rig: OpenRig) -> None:
    fakes = Fakes()
    cap_ms = 5000
    rig = open_rig(fakes, max_utterance_ms=cap_ms, speculative_start_ms=None)
    log = EventLog(rig.session)

    second = tone(1000)
    for _ in range(600):
        await feed(rig.session, second, frame_ms=100)
    await feed(rig.session, silence(1000))
    await rig.session.wait_idle()
    await wait_until(lambda: len(log.of(SpeechStopped)) == 120 and bool(log.of(TurnDone)))

    # 18750 chunks of 32 ms, cut every 157 chunks (5024 ms): 119 cuts and a last, short turn.
    assert len(log.of(SpeechStarted)) == 120
    assert len(fakes.stt.calls) == 120
    assert max(fakes.stt.call_ms) <= cap_ms + CHUNK_MS
    assert fakes.stt.call_ms[-1] == (67 + 2) * CHUNK_MS  # with a two-chunk tail of silence
    assert not any(isinstance(e, ErrorEvent) for e in log.events)


@pytest.mark.parametrize("limit", [1, 3])
@bounded(30)
async def test_sessions_share_engines_within_the_limit(open_rig: OpenRig, limit: int) -> None:
    fakes = Fakes(stt=FakeSTT(delay_s=0.1))
    engines = fakes.engines(stt_limit=limit)
    rigs = [open_rig(fakes, engines=engines) for _ in range(10)]

    results = await asyncio.gather(*(rig.turn() for rig in rigs))

    assert [r.reply_text for r in results] == ["Okay."] * 10
    assert all(r.transcript and r.errors == [] for r in results)
    assert len(fakes.stt.calls) == 10
    if limit == 1:
        assert fakes.stt.max_active == 1
    else:
        assert 1 < fakes.stt.max_active <= limit


@bounded(10)
async def test_close_while_replying_ends_events_and_cancels_the_reply(open_rig: OpenRig) -> None:
    fakes = Fakes(llm=FakeLLM(STORY, delay_s=0.1))
    rig = open_rig(fakes)
    log = EventLog(rig.session)

    await rig.session.say("Tell me a story")
    await log.wait_for_event(ReplyAudio)
    await rig.session.close()

    await wait_until(lambda: log.ended)
    assert fakes.llm.closed_early == 1
    assert fakes.llm.completed == 0
    assert not any(isinstance(e, TurnDone) for e in log.events)

    # A closed session ignores what still comes in.
    await rig.session.push_audio(pcm_bytes(concat(utterance(), silence(600))), RATE_HZ)
    await rig.session.say("Are you there?")
    await rig.session.greet()
    await rig.session.close()
    await asyncio.sleep(0.05)
    assert len(fakes.llm.calls) == 1
    assert fakes.stt.calls == []


@bounded(10)
async def test_commit_turn_says_whether_there_was_a_turn_to_end(open_rig: OpenRig) -> None:
    rig = open_rig(end_of_turn_silence_ms=5000, speculative_start_ms=None)
    await feed(rig.session, silence(500))
    assert rig.session.commit_turn() is False
    await feed(rig.session, utterance(speech_ms=600))
    assert rig.session.commit_turn() is True
    assert rig.session.commit_turn() is False
