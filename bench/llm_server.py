"""Turns per second per LLM server core: ``voxgate llm-server`` (llama.cpp's server, embedded GGUF)
under concurrent conversations, as gateway replicas would load it.

Starts ``voxgate llm-server --threads T --parallel P`` and, for each concurrency C in
``--concurrency``, runs C conversations at once, starting turns for ``--seconds`` (a turn begun
counts whole, the time it takes included): each sends the character's
system prompt, its history and a new spoken-style question to ``/v1/chat/completions`` (streamed,
the configured ``max_tokens`` and temperature, ``cache_prompt`` on as voxgate's provider does) and
starts its next turn as soon as the reply ends (a busy fleet's worst case: no listening time).
Prints turns per second, turns per second per core (T threads), first token and whole reply
p50/p95, and tokens generated per second.

    python -m bench.llm_server [--threads 2] [--parallel 4] [--concurrency 1,2,4] [--seconds 60]

The machine this runs on is shared: figures from a busy machine are lower bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.server_load import free_port
from voxgate.core.config import load_settings

QUESTIONS = (
    "What's the weather usually like in spring?",
    "Can you tell me a short fact about the moon?",
    "How do I boil an egg?",
    "What's a good name for a cat?",
    "Why is the sky blue?",
    "Tell me a joke about computers.",
    "How far away is the sun?",
    "What should I cook for dinner tonight?",
)
HISTORY_TURNS = 4  # what the gateway sends: the last few exchanges


async def conversation(
    http: httpx.AsyncClient, index: int, deadline: float, system: str, max_tokens: int
) -> list[dict[str, float]]:
    history: list[dict[str, str]] = []
    turns = []
    turn = index
    while time.monotonic() < deadline:
        question = QUESTIONS[turn % len(QUESTIONS)]
        turn += 1
        messages = [{"role": "system", "content": system}, *history[-2 * HISTORY_TURNS :]]
        messages.append({"role": "user", "content": question})
        body = {
            "model": "bench",
            "messages": messages,
            "stream": True,
            "max_tokens": max_tokens,
            "temperature": 0.7,
            "cache_prompt": True,
            "stream_options": {"include_usage": True},
        }
        started = time.monotonic()
        first: float | None = None
        reply: list[str] = []
        tokens = 0
        try:
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    for choice in chunk.get("choices", []):
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            first = first or time.monotonic()
                            reply.append(text)
                    if chunk.get("usage"):
                        tokens = chunk["usage"].get("completion_tokens", 0)
        except httpx.HTTPError as exc:  # counted, not fatal: a failed turn is a finding too
            turns.append({"failed": 1.0})
            print(f"turn failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        ended = time.monotonic()  # a turn begun inside the window counts whole (wall grows)
        history += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": "".join(reply)},
        ]
        turns.append(
            {
                "first_token_ms": ((first or ended) - started) * 1000,
                "turn_ms": (ended - started) * 1000,
                "tokens": tokens,
            }
        )
    return turns


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def measure(
    base: str, concurrency: int, seconds: float, threads: int, max_tokens: int
) -> dict[str, Any]:
    system = load_settings().character.system_prompt
    async with httpx.AsyncClient(base_url=base, timeout=300) as http:
        started = time.monotonic()
        deadline = started + seconds
        results = await asyncio.gather(
            *(conversation(http, i, deadline, system, max_tokens) for i in range(concurrency))
        )
    wall = time.monotonic() - started
    failed = sum(1 for conv in results for t in conv if "failed" in t)
    turns = [t for conv in results for t in conv if "failed" not in t]
    first = [t["first_token_ms"] for t in turns]
    whole = [t["turn_ms"] for t in turns]
    tokens = sum(t["tokens"] for t in turns)
    return {
        "concurrency": concurrency,
        "threads": threads,
        "turns": len(turns),
        "failed": failed,
        "turns_per_s": round(len(turns) / wall, 3),
        "turns_per_s_per_core": round(len(turns) / wall / threads, 3),
        "first_token_p50_ms": round(statistics.median(first), 1) if first else None,
        "first_token_p95_ms": round(pct(first, 95), 1),
        "turn_p50_ms": round(statistics.median(whole), 1) if whole else None,
        "turn_p95_ms": round(pct(whole, 95), 1),
        "tokens_per_turn": round(tokens / max(1, len(turns)), 1),
        "tokens_per_s": round(tokens / wall, 1),
    }


async def main(
    threads: int, parallel: int, levels: list[int], seconds: float, max_tokens: int
) -> list[dict[str, Any]]:
    port = free_port()
    command = ["llm-server", "--port", str(port), "--threads", str(threads)]
    server = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "voxgate", *command, "--parallel", str(parallel)],
        stdout=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    rows = []
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            for _ in range(600):
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        await measure(base, 1, 1, threads, max_tokens)  # warm: the system prompt in the cache
        for concurrency in levels:
            row = await measure(base, concurrency, seconds, threads, max_tokens)
            rows.append(row)
            print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    finally:
        server.terminate()
        await server.wait()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="default: the configured [llm] max_tokens"
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/llm_server.json"))
    args = parser.parse_args()
    levels = [int(n) for n in args.concurrency.split(",")]
    max_tokens = args.max_tokens or load_settings().llm.max_tokens
    rows = asyncio.run(main(args.threads, args.parallel, levels, args.seconds, max_tokens))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))
    print(f"written to {args.json}")
