"""The provider benchmark's results as terminal tables, a PNG plot, an HTML page and JSON.

Every table, in the terminal or the page, is built from :func:`table_rows`, so what is printed
and what is written are the same figures, formatted once.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Column, Table

from voxgate.benchmarks.candidates import Capability
from voxgate.benchmarks.plot import plot_png
from voxgate.benchmarks.providers import BenchResult, EngineResult, turn_costs

Format = Callable[[float], str]


def _ms(value: float) -> str:
    return f"{value:.0f}"


def _percent(value: float) -> str:
    return f"{value:.1%}"


def _usd(value: float) -> str:
    return f"${value:.6f}" if value else "$0"


def _one_decimal(value: float) -> str:
    return f"{value:.1f}"


def _three_decimals(value: float) -> str:
    return f"{value:.3f}"


COLUMNS: dict[Capability, list[tuple[str, str, Format]]] = {
    "stt": [
        ("transcript_median_ms", "median (ms)", _ms),
        ("transcript_p95_ms", "p95 (ms)", _ms),
        ("wer", "WER", _percent),
        ("cost_per_clip_usd", "$/clip", _usd),
    ],
    "llm": [
        ("first_token_median_ms", "1st token (ms)", _ms),
        ("first_token_p95_ms", "p95 (ms)", _ms),
        ("total_median_ms", "reply (ms)", _ms),
        ("tokens_per_s", "tok/s", _one_decimal),
        ("cost_per_reply_usd", "$/reply", _usd),
    ],
    "tts": [
        ("first_audio_median_ms", "1st audio (ms)", _ms),
        ("first_audio_p95_ms", "p95 (ms)", _ms),
        ("total_median_ms", "sentence (ms)", _ms),
        ("real_time_factor", "RTF", _three_decimals),
        ("intelligibility_wer", "intell. WER", _percent),
        ("cost_per_sentence_usd", "$/sentence", _usd),
    ],
}
TITLES: dict[Capability, str] = {
    "stt": "Speech to text",
    "llm": "Language model",
    "tts": "Text to speech",
}
TURN_HEADERS = ["stt", "llm", "tts", "cost / turn (est.)"]


def _status(engine: EngineResult) -> str:
    """Short, for a table cell; :func:`notes` says why."""
    if engine.status == "ok" and engine.errors:
        return f"ok, {engine.errors} failed"
    return engine.status


def notes(result: BenchResult) -> list[str]:
    """Why an engine was skipped or failed, or the first error of a call that failed."""
    lines = [
        f"{engine.capability} {engine.name}: {_status(engine)}: {engine.reason}"
        for engine in result.engines
        if engine.reason
    ]
    if result.judge_problem:
        lines.append(f"intelligibility not scored: {result.judge_problem}")
    return lines


def headers(capability: Capability) -> list[str]:
    return ["engine", *(label for _, label, _ in COLUMNS[capability]), "status"]


def table_rows(result: BenchResult, capability: Capability) -> list[list[str]]:
    rows = []
    for engine in (e for e in result.engines if e.capability == capability):
        cells = [engine.name]
        for key, _, fmt in COLUMNS[capability]:
            value = engine.figures.get(key)
            cells.append("-" if value is None else fmt(value))
        rows.append([*cells, _status(engine)])
    return rows


def turn_rows(result: BenchResult) -> list[list[str]]:
    return [[t["stt"], t["llm"], t["tts"], _usd(t["cost_usd"])] for t in turn_costs(result)]


def rich_tables(result: BenchResult) -> list[Table]:
    tables = []
    for capability in COLUMNS:
        first, *rest = headers(capability)
        table = Table(Column(first, no_wrap=True), *rest, title=TITLES[capability])
        for row in table_rows(result, capability):
            table.add_row(*row)
        tables.append(table)
    turns = Table(*TURN_HEADERS, title="Cost per turn: one clip, one reply, that reply spoken")
    for row in turn_rows(result):
        turns.add_row(*row)
    tables.append(turns)
    return tables


def to_json(result: BenchResult) -> dict[str, Any]:
    inputs = result.inputs
    return {
        "started_at": dt.datetime.fromtimestamp(result.started_at, dt.UTC).isoformat(),
        "judge": result.judge,
        "judge_problem": result.judge_problem,
        "inputs": {
            "clips": [clip.name for clip in inputs.clips],
            "prompts": list(inputs.prompts),
            "sentences": list(inputs.sentences),
            "system_prompt": inputs.system_prompt,
            "rounds": inputs.rounds,
        },
        "engines": [asdict(engine) for engine in result.engines],
        "turns": turn_costs(result),
    }


def _html_table(title: str, head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in rows
    )
    return (
        f"<h2>{html.escape(title)}</h2>\n<table>\n<thead><tr>{cells}</tr></thead>\n"
        f"<tbody>\n{body}</tbody>\n</table>\n"
    )


def html_page(result: BenchResult, png: bytes) -> str:
    """One file, nothing fetched: the plot is a data URI, the style inline."""
    data = to_json(result)
    parts = [_html_table(TITLES[c], headers(c), table_rows(result, c)) for c in COLUMNS]
    parts.append(_html_table("Cost per turn (estimated)", TURN_HEADERS, turn_rows(result)))
    if notes(result):
        items = "".join(f"<li>{html.escape(line)}</li>" for line in notes(result))
        parts.append(f"<h2>Notes</h2>\n<ul>{items}</ul>\n")
    judge = result.judge or result.judge_problem or "none"
    clips = ", ".join(data["inputs"]["clips"])
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>voxgate: provider benchmark</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
td:first-child, th:first-child, td:last-child {{ text-align: left; }}
img {{ max-width: 100%; }}
</style></head>
<body>
<h1>voxgate: provider benchmark</h1>
<p>{html.escape(data["started_at"])}. Clips: {html.escape(clips)}; {len(data["inputs"]["prompts"])}
prompts, {len(data["inputs"]["sentences"])} sentences, {result.inputs.rounds} round(s).
Intelligibility is the WER of {html.escape(judge)} on each engine's audio.
Cost per turn: one clip, one reply of the LLM's mean length, and that reply spoken.</p>
<img alt="latency and word error rate per engine" src="data:image/png;base64,{image}">
{"".join(parts)}
</body></html>
"""


def write_report(result: BenchResult, output: Path) -> dict[str, Path]:
    """``results.json``, ``providers.png`` and ``providers.html`` in ``output`` (created)."""
    output.mkdir(parents=True, exist_ok=True)
    png = plot_png(result)
    paths = {
        "json": output / "results.json",
        "png": output / "providers.png",
        "html": output / "providers.html",
    }
    paths["json"].write_text(json.dumps(to_json(result), indent=2) + "\n")
    paths["png"].write_bytes(png)
    paths["html"].write_text(html_page(result, png))
    return paths
