"""Real models, real speech: a spoken turn end to end on the embedded default engines."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voxgate.cli import SAMPLE_QUESTION as SAMPLE
from voxgate.core.audio import int16_to_float, read_wav, resample
from voxgate.core.config import Settings
from voxgate.core.errors import ErrorCode
from voxgate.core.events import ReplyAudio, ReplyStarted, SpeechStarted, SpeechStopped, TurnDone
from voxgate.evaluation import character_error_rate, normalize_words, word_error_rate
from voxgate.pipeline import Engines, TurnSession
from voxgate.pipeline.drive import spoken_turn
from voxgate.speech_corpus import INSTALL_HINT, librivox_clips

pytestmark = pytest.mark.models


def _session(engines: Engines, settings: Settings, **character: str) -> TurnSession:
    chars = settings.character.model_copy(update=character) if character else settings.character
    return TurnSession(engines, settings.turn, chars, output_rate_hz=24_000)


async def _transcribe_back(engines: Engines, pcm: np.ndarray, rate: int) -> str:
    return await engines.stt.transcribe(int16_to_float(resample(pcm, rate, 16_000)))


async def test_spoken_question_is_answered_and_the_reply_audio_says_the_reply_text(
    real_engines: Engines, real_settings: Settings
) -> None:
    samples, rate = read_wav(SAMPLE)
    session = _session(real_engines, real_settings)
    result = await spoken_turn(session, samples, rate, realtime=False)
    await session.close()

    assert {"capital", "france"} <= set(normalize_words(result.transcript))
    assert result.reply_text.strip()
    assert result.sample_rate_hz == 24_000
    heard_back = await _transcribe_back(real_engines, result.pcm, result.sample_rate_hz)
    assert character_error_rate(result.reply_text, heard_back) <= 0.25, (
        result.reply_text,
        heard_back,
    )

    kinds = [type(event) for event in result.events]
    order = [SpeechStarted, SpeechStopped, ReplyStarted, ReplyAudio, TurnDone]
    assert [kinds.index(kind) for kind in order] == sorted(kinds.index(kind) for kind in order)
    timings = result.events[-1].timings if isinstance(result.events[-1], TurnDone) else None
    assert timings is not None and timings.stt_ms and timings.tts_first_audio_ms


async def test_librivox_speech_is_transcribed_within_a_fair_error_rate(
    real_engines: Engines, real_settings: Settings
) -> None:
    clips = librivox_clips()
    if not clips:
        pytest.fail(f"LibriVox clips missing: {INSTALL_HINT}")
    clip = clips[1]  # "he was not an ill disposed young man"
    samples, rate = read_wav(clip.path)
    session = _session(real_engines, real_settings)
    result = await spoken_turn(session, samples, rate, realtime=False)
    await session.close()
    assert word_error_rate(clip.transcript, result.transcript) <= 0.3, result.transcript
    assert result.reply_text and result.audio


async def test_history_carries_into_the_next_typed_turn(
    real_engines: Engines, real_settings: Settings
) -> None:
    session = _session(real_engines, real_settings)
    await session.say("My name is Alice. Just say hello to me.")
    first, _ = await _until_done(session)
    await session.say("What is my name?")
    second, _ = await _until_done(session)
    await session.close()
    assert first.reply_text
    assert "alice" in normalize_words(second.reply_text), second.reply_text
    assert [exchange.user_text for exchange in session.history.exchanges] == [
        "My name is Alice. Just say hello to me.",
        "What is my name?",
    ]


async def test_fixed_greeting_is_spoken_first(
    real_engines: Engines, real_settings: Settings
) -> None:
    greeting = "Hello, I am Vox. What would you like to know?"
    session = _session(real_engines, real_settings, first_message=greeting)
    await session.greet()
    done, audio = await _until_done(session)
    await session.close()
    assert done.reply_text == greeting
    heard_back = await _transcribe_back(
        real_engines, np.frombuffer(audio, dtype="<i2").astype(np.int16), 24_000
    )
    assert word_error_rate(greeting, heard_back) <= 0.25, heard_back


async def test_silence_and_noise_give_no_reply_and_no_crash(
    real_engines: Engines, real_settings: Settings
) -> None:
    session = _session(real_engines, real_settings)
    silence = np.zeros(16_000 * 2, dtype=np.int16)
    quiet = await spoken_turn(session, silence, 16_000, realtime=False)
    assert not quiet.reply_text and not quiet.audio
    noise = np.random.default_rng(1).integers(-32768, 32767, 16_000 * 2).astype(np.int16)
    noisy = await spoken_turn(session, noise, 16_000, realtime=False)
    # White noise may or may not trip the VAD; if it does, it must not become a reply.
    assert not noisy.reply_text or noisy.transcript
    assert all(error.code != ErrorCode.INTERNAL for error in noisy.errors)
    # ...and the session still answers real speech afterwards.
    samples, rate = read_wav(SAMPLE)
    after = await spoken_turn(session, samples, rate, realtime=False)
    await session.close()
    assert "france" in normalize_words(after.transcript)


async def _until_done(session: TurnSession) -> tuple[TurnDone, bytes]:
    """The next TurnDone and the reply audio that came before it."""
    audio: list[bytes] = []
    async with asyncio.timeout(60):
        async for event in session.events():
            if isinstance(event, ReplyAudio):
                audio.append(event.pcm)
            if isinstance(event, TurnDone):
                return event, b"".join(audio)
    raise AssertionError("session closed before the turn was done")


@pytest.mark.parametrize("answer", ["Okay.", "Yes.", "Paris.", "No thanks."])
async def test_a_short_answer_is_not_transcribed_as_a_loop(
    real_engines: Engines, answer: str
) -> None:
    # Whisper on a short window loops on answers like these ("Okay. Okay. Okay.").
    chunks = [chunk async for chunk in real_engines.tts.synthesize(answer)]
    speech = resample(np.concatenate(chunks), real_engines.tts.sample_rate_hz, 16_000)
    text = await real_engines.stt.transcribe(int16_to_float(speech))
    # One word may be misheard ("Harris") or, rarely, doubled ("Yes, yes": Piper samples its
    # prosody, so the audio differs run to run); what must not happen is the loop.
    from voxgate.providers.faster_whisper_stt import repeats_itself

    assert not repeats_itself(text), text
    assert (
        len(normalize_words(answer))
        <= len(normalize_words(text))
        <= len(normalize_words(answer)) + 1
    ), text


def test_repetition_is_recognised() -> None:
    from voxgate.providers.faster_whisper_stt import repeats_itself

    assert repeats_itself("Okay. Okay. Okay.")
    assert repeats_itself("and then the cat and then the cat and then the cat")
    assert not repeats_itself("the cat sat on the mat")
    assert not repeats_itself("very very good")
