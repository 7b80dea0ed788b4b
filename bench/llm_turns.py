"""Benchmark: the embedded LLM's first token by turn index, as the history grows.

One conversation of ``--turns`` typed questions on the configured llama.cpp model, the history
kept as the pipeline keeps it (the reply as spoken: pieces joined, markdown dropped), repeated
``--rounds`` times. Prints, per turn index, the first token's delay (median, p95) and llama.cpp's
own count of prompt tokens taken from the KV cache and evaluated. ``--ab`` runs the same
conversations with the generated text not put back (the history as spoken only), interleaved, so
the difference is measured on the same machine load.

    python -m bench.llm_turns [--turns 8] [--rounds 3] [--ab] [--json bench/results/llm_turns.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from voxgate.core.capabilities import ChatMessage
from voxgate.core.config import load_settings
from voxgate.models import ModelStore
from voxgate.pipeline.history import Conversation, Exchange
from voxgate.pipeline.sentences import SentenceSplitter
from voxgate.providers.llamacpp_llm import LlamaCppLLM, LlamaCppSettings

# A different opener each round, so no round starts on the previous round's cached first turn.
OPENERS = (
    "Hi! Who are you?",
    "Hello there, who am I talking to?",
    "Hey, what's your name?",
    "Good morning! What can you do?",
    "Hi, can you help me with something?",
)
QUESTIONS = (
    "Can you name three farm animals?",
    "Which one of them gives us milk?",
    "What sound does it make?",
    "Tell me a fun fact about it.",
    "How many legs does it have?",
    "What does it like to eat?",
    "Thank you, goodbye!",
)

console = Console()


def spoken(text: str) -> str:
    """The reply as the history records it: the spoken pieces, joined."""
    splitter = SentenceSplitter(4, 10)
    return " ".join([*splitter.push(text), *splitter.flush()])


async def conversation(
    llm: LlamaCppLLM, system: str, turns: int, opener: str
) -> list[dict[str, float]]:
    history = Conversation(max_turns=20)
    rows: list[dict[str, float]] = []
    for index in range(turns):
        question = opener if index == 0 else QUESTIONS[(index - 1) % len(QUESTIONS)]
        messages: list[ChatMessage] = history.messages(system, question)
        started = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        async for piece in llm.stream_reply(messages):
            if isinstance(piece, str):
                first = first or (time.perf_counter() - started) * 1000.0
                pieces.append(piece)
        stats = llm.prompt_stats[-1]
        rows.append(
            {
                "turn": index + 1,
                "first_token_ms": first or float("nan"),
                "cached": stats.cached_tokens,
                "evaluated": stats.evaluated_tokens,
            }
        )
        history.record(Exchange(question, spoken("".join(pieces))))
    return rows


def table(title: str, runs: list[list[dict[str, float]]]) -> Table:
    out = Table("turn", "first token p50", "p95", "cached tokens", "evaluated tokens", title=title)
    for index in range(len(runs[0])):
        firsts = [run[index]["first_token_ms"] for run in runs]
        out.add_row(
            str(index + 1),
            f"{statistics.median(firsts):.0f} ms",
            f"{np.percentile(firsts, 95):.0f} ms",
            f"{statistics.median(run[index]['cached'] for run in runs):.0f}",
            f"{statistics.median(run[index]['evaluated'] for run in runs):.0f}",
        )
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ab", action="store_true", help="also without the generated text")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    settings = load_settings()
    if not isinstance(settings.llm, LlamaCppSettings):
        raise SystemExit("bench.llm_turns measures the llamacpp provider; configure it in [llm]")
    llm_settings = settings.llm.model_copy(update={"seed": 0})
    path = ModelStore(settings.models_dir).resolve(llm_settings.model)
    llm = LlamaCppLLM(path, llm_settings)
    system = settings.character.system_prompt
    restoring = llm._as_generated
    variants = {"generated text restored": restoring}
    if args.ab:
        variants["history as spoken only"] = lambda message: message.content
    results: dict[str, list[list[dict[str, float]]]] = {name: [] for name in variants}
    # As serve's warm-up does: the system prompt is in the cache before the first turn.
    await conversation(llm, system, 1, "Hi!")
    openers = iter(OPENERS * (args.rounds * len(variants)))
    for _ in range(args.rounds):
        for name, variant in variants.items():
            llm._as_generated = variant  # type: ignore[method-assign]
            results[name].append(await conversation(llm, system, args.turns, next(openers)))
    for name, runs in results.items():
        console.print(table(f"{llm_settings.model}: {name}", runs))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
