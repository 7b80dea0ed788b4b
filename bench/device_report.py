"""Figures and the printed table of the device benchmark (bench/device.py)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

STAGES = (
    "end_of_turn_wait_ms",
    "stt_ms",
    "llm_first_token_ms",
    "first_sentence_ms",
    "tts_first_audio_ms",
    "speech_end_to_first_audio_ms",
)
"""The server's own per-turn timings (``messages.timings``), in the order a turn runs."""
SIGNAL = {
    "relay": "speech.stopped",
    "elato": "AUDIO.COMMITTED",
    "proxy_ws": "speech_end",
    "proxy_http": "response headers",
    "xiaozhi": "stt",  # after transcription: the protocol has no earlier end-of-turn message
}
"""Each protocol's "your turn is over" message to the device."""


def spread(values: list[float]) -> dict[str, float | int | None]:
    """n, p50, p95, min and max (milliseconds, rounded); None where there are no values."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "min": None, "max": None}
    array = np.asarray(values, dtype=np.float64)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(array, 50)), 1),
        "p95": round(float(np.percentile(array, 95)), 1),
        "min": round(float(array.min()), 1),
        "max": round(float(array.max()), 1),
    }


def summarise(conversations: list[dict[str, Any]]) -> dict[str, Any]:
    """Per protocol, and over all protocols: the device figure overall and per turn index, the
    end-of-turn signal's delay, the server's stages, and what the device sees beyond what the
    server measures (the server times from its own VAD's end of speech)."""
    rows_by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for conversation in conversations:
        for row in conversation["turns"]:
            rows_by[row["protocol"]].append(row)
            rows_by["all"].append(row)
    return {protocol: _summary(rows) for protocol, rows in rows_by.items()}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    answered = [row for row in rows if row["first_audio_ms"] is not None]
    by_turn: dict[int, list[float]] = defaultdict(list)
    for row in answered:
        by_turn[row["turn"]].append(row["first_audio_ms"])
    stages: dict[str, list[float]] = defaultdict(list)
    beyond_server: list[float] = []
    for row in answered:
        timings = row["server_timings"] or {}
        for stage in STAGES:
            if timings.get(stage) is not None:
                stages[stage].append(float(timings[stage]))
        if timings.get("speech_end_to_first_audio_ms") is not None:
            beyond_server.append(row["first_audio_ms"] - timings["speech_end_to_first_audio_ms"])
    signals = [row["turn_end_signal_ms"] for row in rows if row["turn_end_signal_ms"] is not None]
    return {
        "turns": len(rows),
        "unanswered_turns": len(rows) - len(answered),
        "turns_with_errors": sum(1 for row in rows if row["errors"]),
        "first_audio_ms": spread([row["first_audio_ms"] for row in answered]),
        "first_audio_ms_by_turn": {turn: spread(by_turn[turn]) for turn in sorted(by_turn)},
        "turn_end_signal_ms": spread(signals),
        "server_stages_ms": {stage: spread(stages[stage]) for stage in STAGES},
        "device_minus_server_ms": spread(beyond_server),
    }


def _ms(value: object) -> str:
    return "-" if value is None else f"{value:.0f}"


def render(results: dict[str, Any]) -> str:
    summary: dict[str, Any] = results["summary"]
    protocols = [p for p in summary if p != "all"] + (["all"] if "all" in summary else [])
    turns = sorted({t for p in protocols for t in summary[p]["first_audio_ms_by_turn"]})
    lines = [
        "",
        f"$ {results['command']}",
        f"{results['date_utc']} UTC, engines {results['engines']}, {results['cpus']} CPUs, "
        f"speech: {results['speech']}",
        "",
        "End of user speech (last voiced sample of the clip) -> first reply audio byte at the "
        "device, ms",
        f"{'protocol':10}{'turns':>6}{'p50':>7}{'p95':>7}{'min':>7}{'max':>7}"
        f"{'device-server p50':>19}   end-of-turn signal p50/p95",
    ]
    for protocol in protocols:
        s = summary[protocol]
        first, beyond, signal = (
            s["first_audio_ms"],
            s["device_minus_server_ms"],
            s["turn_end_signal_ms"],
        )
        name = SIGNAL.get(protocol, "")
        lines.append(
            f"{protocol:10}{s['turns']:>6}{_ms(first['p50']):>7}{_ms(first['p95']):>7}"
            f"{_ms(first['min']):>7}{_ms(first['max']):>7}{_ms(beyond['p50']):>19}   "
            + (f"{name} {_ms(signal['p50'])}/{_ms(signal['p95'])}" if name else "")
            + (f"  ({s['unanswered_turns']} unanswered)" if s["unanswered_turns"] else "")
        )
    lines += ["", "By turn index (p50 / p95 over conversations), ms"]
    lines.append(f"{'protocol':10}" + "".join(f"{'turn ' + str(t):>15}" for t in turns))
    for protocol in protocols:
        cells = []
        for turn in turns:
            figure = summary[protocol]["first_audio_ms_by_turn"].get(turn)
            cells.append(
                f"{_ms(figure['p50']) + ' / ' + _ms(figure['p95']):>15}" if figure else f"{'':>15}"
            )
        lines.append(f"{protocol:10}" + "".join(cells))
    lines += ["", "The server's own timings of the same turns (messages.timings), p50 / p95, ms"]
    short = {
        "end_of_turn_wait_ms": "eot wait",
        "stt_ms": "stt",
        "llm_first_token_ms": "llm 1st tok",
        "first_sentence_ms": "1st sentence",
        "tts_first_audio_ms": "tts 1st audio",
        "speech_end_to_first_audio_ms": "server total",
    }
    lines.append(f"{'protocol':10}" + "".join(f"{short[s]:>16}" for s in STAGES))
    for protocol in protocols:
        stages = summary[protocol]["server_stages_ms"]
        lines.append(
            f"{protocol:10}"
            + "".join(
                f"{_ms(stages[s]['p50']) + ' / ' + _ms(stages[s]['p95']):>16}" for s in STAGES
            )
        )
    lines.append(
        "(device-server: the device's figure minus the server's speech_end_to_first_audio_ms: "
        "the server's VAD lateness, framing, Opus, the socket)"
    )
    return "\n".join(lines)
