"""The cost of one Silero VAD call for B sessions: batched (one call) vs one call per session.

Each session brings 3 chunks (a 100 ms frame); best of 5 repeats of 20 calls each, so a busy
machine's interruptions count less.

    python -m bench.vad_batch [--sessions 1,2,5,20,100,200,300]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from voxgate.core.config import load_settings
from voxgate.models import ModelStore
from voxgate.providers.silero_vad import SileroStream, SileroVAD


def one_by_one(streams: list[SileroStream], chunks: list[np.ndarray]) -> None:
    for stream, rows in zip(streams, chunks, strict=True):
        stream.speech_probabilities(rows)


def best_ms(call: Callable[[], object], repeats: int = 5, calls: int = 20) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1000


def main(levels: list[int]) -> None:
    path = str(ModelStore(load_settings().models_dir, show_progress=False).resolve("silero-vad"))
    vad = SileroVAD(path, batch=True)
    rng = np.random.default_rng(0)
    print(f"{'sessions':>8} {'batched ms':>11} {'per-session calls ms':>21} {'ratio':>6}")
    for sessions in levels:
        streams = [vad.new_stream() for _ in range(sessions)]
        chunks = [rng.normal(0, 0.1, (3, 512)).astype(np.float32) for _ in range(sessions)]

        together = best_ms(partial(vad.speech_probabilities_batch, streams, chunks))
        apart = best_ms(partial(one_by_one, streams, chunks))
        print(f"{sessions:>8} {together:>11.2f} {apart:>21.2f} {apart / together:>6.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", default="1,2,5,20,100,200,300")
    args = parser.parse_args()
    main([int(n) for n in args.sessions.split(",")])
