"""Usage and cost per turn: what each engine did, priced from the configured table."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import EventLog, concat, feed, silence, tone
from voxgate.core.config import (
    CharacterSettings,
    Price,
    Settings,
    TurnSettings,
)
from voxgate.core.events import TurnDone
from voxgate.core.usage import EngineUsage, UsageMeter, estimate_tokens, metering
from voxgate.models import ModelStore
from voxgate.pipeline import TurnSession, load_engines
from voxgate.pipeline.metering import cost_usd


def _settings(tmp_path: Path, **prices: Price) -> Settings:
    return Settings(
        data_dir=tmp_path,
        vad={"provider": "standin"},
        stt={"provider": "standin", "model": "ear-1"},
        llm={"provider": "standin", "model": "brain-1"},
        tts={"provider": "standin", "voice": "mouth-1"},
        prices={key.replace("__", "/"): price for key, price in prices.items()},
    )


async def _one_spoken_turn(settings: Settings) -> TurnDone:
    engines = load_engines(settings, ModelStore(settings.models_dir))
    session = TurnSession(
        engines, TurnSettings(speculative_start_ms=None), CharacterSettings(system_prompt="Be.")
    )
    log = EventLog(session)
    try:
        await feed(session, concat(silence(200), tone(1000), silence(700)))
        return await log.wait_for_event(TurnDone)
    finally:
        await session.close()
        engines.close()


async def test_a_spoken_turn_records_each_engine_with_its_units_and_price(
    tmp_path: Path,
) -> None:
    settings = _settings(
        tmp_path,
        **{
            "standin__ear-1": Price(per_audio_minute=0.6),
            "standin__brain-1": Price(per_million_tokens_in=2.0, per_million_tokens_out=8.0),
            "standin__mouth-1": Price(per_million_characters=30.0),
        },
    )
    done = await _one_spoken_turn(settings)

    stt, llm, tts = done.usage
    assert (stt.capability, stt.provider, stt.model) == ("stt", "standin", "ear-1")
    # The utterance as transcribed: the tone plus pre-roll, at most the audio fed.
    assert 1.0 <= stt.audio_s <= 1.9
    assert stt.cost_usd == pytest.approx(stt.audio_s / 60 * 0.6, rel=1e-6)

    assert (llm.capability, llm.model) == ("llm", "brain-1")
    # The stand-in LLM reports no token counts: estimated from the text.
    assert llm.tokens_estimated and llm.tokens_out == estimate_tokens("Hello to you too.")
    assert llm.tokens_in > estimate_tokens("Be.")
    assert llm.cost_usd == pytest.approx((llm.tokens_in * 2 + llm.tokens_out * 8) / 1e6)

    assert (tts.capability, tts.model) == ("tts", "mouth-1")
    assert tts.characters == len("Hello to you too.")
    assert tts.audio_s == pytest.approx(0.2 * 4)  # the stand-in speaks 200 ms a word
    assert tts.cost_usd == pytest.approx(tts.characters * 30 / 1e6)

    assert done.cost_usd == pytest.approx(stt.cost_usd + llm.cost_usd + tts.cost_usd)
    assert all(record.compute_s >= 0 for record in done.usage)


async def test_unpriced_engines_cost_nothing_but_their_compute_time_is_kept(
    tmp_path: Path,
) -> None:
    done = await _one_spoken_turn(_settings(tmp_path))
    assert [record.capability for record in done.usage] == ["stt", "llm", "tts"]
    assert done.cost_usd == 0.0
    assert all(record.compute_s > 0 for record in done.usage)


def test_configured_prices_merge_over_the_default_table(tmp_path: Path) -> None:
    settings = _settings(tmp_path, openai__whisper__1=Price(per_audio_minute=1.0))
    assert settings.prices["openai/whisper/1"].per_audio_minute == 1.0
    assert settings.prices["openai/gpt-4o-mini"].per_million_tokens_out > 0


def test_cost_of_each_kind_of_unit() -> None:
    price = Price(
        per_audio_minute=0.006,
        per_million_tokens_in=0.15,
        per_million_tokens_out=0.6,
        per_million_characters=15.0,
    )
    stt = EngineUsage("stt", "openai", "whisper-1", audio_s=90.0)
    llm = EngineUsage("llm", "openai", "gpt-4o-mini", tokens_in=1_000_000, tokens_out=500_000)
    tts = EngineUsage("tts", "openai", "tts-1", characters=2_000, audio_s=30.0)
    assert cost_usd(stt, price) == pytest.approx(0.009)
    assert cost_usd(llm, price) == pytest.approx(0.15 + 0.3)
    # TTS billed both ways here: per minute and per character.
    assert cost_usd(tts, price) == pytest.approx(0.003 + 0.03)


def test_a_meter_only_counts_inside_its_block() -> None:
    from voxgate.core.usage import current_meter, report_tokens

    meter = UsageMeter()
    report_tokens(1, 2)  # no meter: ignored
    with metering(meter):
        assert current_meter() is meter
        report_tokens(3, 4)
    assert current_meter() is None
    assert meter.reported_tokens == (3, 4)


async def test_an_interrupted_reply_bills_its_cancelled_calls_after_the_turn(
    tmp_path: Path,
) -> None:
    """The TurnDone of an interrupted reply goes out at once; what the cancelled LLM had written
    by then is billed just after, as LateUsage (found in review: it was lost)."""
    from tests.fakes import EventLog, FakeLLM, Fakes
    from voxgate.core.events import LateUsage, ReplyTextDelta
    from voxgate.pipeline.engines import LimitedLLM
    from voxgate.pipeline.metering import MeteredLLM

    fakes = Fakes(llm=FakeLLM(["One two three. " * 3] * 40, delay_s=0.05))
    engines = fakes.engines()
    engines.llm = LimitedLLM(MeteredLLM(fakes.llm, "fake", Price()), 1)
    session = TurnSession(engines, TurnSettings(), CharacterSettings(system_prompt="Be."))
    log = EventLog(session)
    try:
        await session.say("Count slowly")
        await log.wait_for_event(ReplyTextDelta, count=3)
        session.interrupt()
        done = await log.wait_for_event(TurnDone)
        late = await log.wait_for_event(LateUsage)
    finally:
        await session.close()
        engines.close()
    assert done.interrupted
    assert all(record.capability != "llm" for record in done.usage)
    (llm,) = [record for record in late.usage if record.capability == "llm"]
    assert late.turn_id == done.turn_id and llm.tokens_out > 0


async def test_a_cloud_engine_is_priced_under_its_own_default_model(tmp_path: Path) -> None:
    """Deepgram's own default model is run and billed (the engine declares it)."""
    from pydantic import SecretStr

    from voxgate.pipeline.metering import MeteredSTT, MeteredTTS

    settings = Settings(
        data_dir=tmp_path,
        vad={"provider": "standin"},
        stt={"provider": "deepgram", "api_key": SecretStr("k")},
        llm={"provider": "standin"},
        tts={"provider": "deepgram", "api_key": SecretStr("k")},
    )
    engines = load_engines(settings, ModelStore(settings.models_dir))
    try:
        stt, tts = engines.stt.inner, engines.tts.inner  # type: ignore[attr-defined]
        assert isinstance(stt, MeteredSTT) and isinstance(tts, MeteredTTS)
        assert (stt.model, stt.price.per_audio_minute) == ("nova-3", 0.0043)
        assert (tts.model, tts.price.per_million_characters) == ("aura-2-thalia-en", 30.0)
    finally:
        await engines.aclose()
