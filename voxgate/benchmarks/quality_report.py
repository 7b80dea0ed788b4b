"""What ``voxgate bench quality`` asks with (prompts) and how it shows the results (a table)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.table import Table

from voxgate.benchmarks.quality_run import Cell, Prompt

DEFAULT = "default"


def select_prompts(
    labels: Sequence[str] | None, default_prompt: str, characters: Mapping[str, str]
) -> list[Prompt]:
    """``labels`` (all when None) as prompts: ``default`` is the configured character's, any
    other a built-in character's slug from ``characters`` (slug → system prompt)."""
    known = {DEFAULT: default_prompt, **characters}
    unknown = [label for label in labels or () if label not in known]
    if unknown:
        raise ValueError(f"unknown character {', '.join(unknown)} (known: {', '.join(known)})")
    return [Prompt(label, known[label]) for label in labels or known]


def table(cells: Sequence[Cell]) -> Table:
    out = Table(
        "model", "prompt", "right", "fraction", "words p50", "first token p50", "p95", "reply p50"
    )
    for cell in cells:
        s = cell.summary()
        out.add_row(
            cell.model,
            cell.prompt,
            f"{s['right']}/{s['questions']}",
            f"{s['fraction_right']:.0%}",
            f"{s['reply_words_median']}",
            f"{s['first_token_ms_p50']} ms",
            f"{s['first_token_ms_p95']} ms",
            f"{s['reply_ms_median']} ms",
        )
    return out
