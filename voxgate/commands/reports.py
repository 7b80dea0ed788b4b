"""``voxgate history`` and ``voxgate usage``: what was said, and what it cost."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table

from voxgate.commands.common import ConfigOption, console, day_start, say, with_store
from voxgate.store import Store
from voxgate.store.records import Message, UsageSummary
from voxgate.store.reports import usage_total

LATENCY_KEYS = ("speech_end_to_first_audio_ms", "turn_end_to_first_audio_ms")
"""Which timing a turn's latency is: the one the user hears; a typed turn has only the second."""


def history(
    device: Annotated[str, typer.Argument(help="The device's name.")],
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many messages.")] = 20,
    config: ConfigOption = None,
) -> None:
    """A device's last messages, oldest first: who said what, what was heard, how fast."""

    async def read(store: Store) -> list[Message]:
        return await store.conversations.history(device, limit)

    messages = with_store(config, read)
    if not messages:
        say(f"no messages from {escape(device)} yet")
        return
    table = Table("time", "who", "text", "latency", title=f"{escape(device)}: last messages")
    for index, message in enumerate(messages):
        following = messages[index + 1] if index + 1 < len(messages) else None
        table.add_row(
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(message.created_at)),
            "you" if message.role == "user" else "assistant",
            _text(message),
            _latency(message),
            # A line between conversations.
            end_section=following is not None
            and following.conversation_id != message.conversation_id,
        )
    console.print(table)


def _text(message: Message) -> str:
    text = escape(message.text)
    if not message.interrupted:
        return text
    heard = escape(message.heard_text or "")
    return f"{text}\n[yellow]interrupted; heard:[/] {heard or '(nothing)'}"


def _latency(message: Message) -> str:
    for key in LATENCY_KEYS:
        value = (message.timings or {}).get(key)
        if isinstance(value, int | float):
            return f"{value:.0f} ms"
    return ""


def usage(
    user: Annotated[str | None, typer.Option(help="Only this user.")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this day on (YYYY-MM-DD, UTC), inclusive.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Turns, audio minutes, tokens, TTS characters and cost per user per day (UTC)."""
    start = None if since is None else day_start(since, "--since")

    async def read(store: Store) -> list[UsageSummary]:
        return await store.reports.usage(user=user, since=start)

    rows = with_store(config, read)
    if not rows:
        say("no usage recorded" + (f" since {since}" if since else ""))
        return
    numbers = ("turns", "audio min", "tokens in", "tokens out", "characters", "cost (USD)")
    table = Table(
        "day",
        "user",
        *(Column(name, justify="right") for name in numbers),
        title="usage per user per day (UTC)",
    )
    for row in rows:
        table.add_row(*_cells(row))
    table.add_section()
    table.add_row(*_cells(usage_total(rows)), style="bold")
    console.print(table)


def _cells(row: UsageSummary) -> list[str]:
    return [
        row.day,
        escape(row.user),
        str(row.turns),
        f"{row.audio_minutes:.2f}",
        str(row.tokens_in),
        str(row.tokens_out),
        str(row.characters),
        f"{row.cost_usd:.6f}",
    ]
