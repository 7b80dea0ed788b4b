"""The conversation's KV prefix stays cached across turns: by turn index, llama.cpp evaluates only
the new turn's tokens, never the history again (read from its own timings, not wall time)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from voxgate.core.config import CharacterSettings, Settings
from voxgate.core.events import TurnDone
from voxgate.pipeline import Engines, TurnSession
from voxgate.providers.llamacpp_llm import LlamaCppLLM, PromptStats, spoken_key

pytestmark = pytest.mark.models

TURNS = (
    "Name three fruits.",
    "And three animals?",
    "Three colours, please.",
    "What about three vegetables?",
    "Three things in a kitchen?",
    "Three things in a garden?",
)
# Replies as lists, one item a line: the history holds them as spoken (one line, no numbers'
# line breaks), so without the generated text put back each reply would be evaluated again.
LISTS = CharacterSettings(
    system_prompt="Answer every question with a numbered list of exactly three items, one item "
    "per line, and nothing else."
)


def _parts(engine: object) -> Iterator[object]:
    yield engine
    inner = getattr(engine, "inner", None)
    if inner is not None:
        yield from _parts(inner)
    for member in getattr(engine, "engines", ()):
        yield from _parts(member)


def llama(engines: Engines) -> LlamaCppLLM:
    return next(e for e in _parts(engines.llm) if isinstance(e, LlamaCppLLM))


async def converse(
    engines: Engines, settings: Settings, character: CharacterSettings, turns: tuple[str, ...]
) -> tuple[list[PromptStats], list[str]]:
    llm = llama(engines)
    session = TurnSession(engines, settings.turn, character, output_rate_hz=24_000)
    stats: list[PromptStats] = []
    replies: list[str] = []
    try:
        for text in turns:
            before = len(llm.prompt_stats)
            await session.say(text)
            async for event in session.events():
                if isinstance(event, TurnDone):
                    # Heard to the end, as a device reports it: the whole reply is history.
                    session.report_playout(event.turn_id, 1e9)
                    replies.append(event.reply_text)
                    break
            assert len(llm.prompt_stats) == before + 1
            stats.append(llm.prompt_stats[-1])
    finally:
        await session.close()
    return stats, replies


@pytest.fixture
def greedy(real_engines: Engines) -> Iterator[None]:
    """Greedy decoding for this test: a sampled reply can pick a token split the tokenizer would
    not ("Water|proof" for "Waterproof"), and the text put back, tokenised canonically, then
    differs from the cache for a few tokens. That costs a few tokens, not the history; it made
    this test fail about one run in three, so here the reply is the model's most likely one."""
    llm = llama(real_engines)
    sampled = llm._settings
    llm._settings = sampled.model_copy(update={"temperature": 0.0})
    yield
    llm._settings = sampled


async def test_each_turn_evaluates_only_its_own_tokens(
    real_engines: Engines, real_settings: Settings, greedy: None
) -> None:
    stats, replies = await converse(real_engines, real_settings, LISTS, TURNS)

    # The test means something only if the spoken history differs from what was generated
    # (and the model keeps its line breaks only if it sees them in its own earlier replies).
    generated = [llama(real_engines)._generated.get(spoken_key(r), r) for r in replies]
    assert all("\n" in g for g in generated), generated
    for index in range(1, len(TURNS)):
        previous, this = stats[index - 1], stats[index]
        # Everything the previous request held is reused: its prompt and its reply (all but the
        # end-of-turn token, which the chat template writes again)...
        held = previous.prompt_tokens + previous.generated_tokens - 1
        assert this.cached_tokens >= held, (index + 1, stats)
        # ...and what is evaluated is the new user turn and the chat template around it.
        assert this.evaluated_tokens <= 30, (index + 1, stats)
    assert stats[-1].evaluated_tokens <= stats[1].evaluated_tokens + 8, stats
    assert stats[-1].prompt_tokens > stats[1].prompt_tokens + 60  # the history did grow
