"""The conversation so far, as the LLM sees it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from voxgate.core.capabilities import ChatMessage


@dataclass(frozen=True, slots=True)
class Exchange:
    user_text: str | None
    """None for a turn the assistant started (the greeting)."""
    assistant_text: str
    """What the user heard: cut short when they interrupted."""
    interrupted: bool = False


class Conversation:
    """Owned by one session; the prompt holds at most the last ``max_turns`` exchanges.

    Old exchanges leave the prompt half a window at a time, not one per turn: a prompt whose
    start moved every turn would share nothing with the last one but the system prompt, and the
    LLM would read the whole history again each turn instead of taking it from its KV cache.
    """

    def __init__(self, max_turns: int = 20) -> None:
        self.max_turns = max_turns
        self.exchanges: list[Exchange] = []

    def restore(self, exchanges: Iterable[Exchange]) -> None:
        """Continue an earlier conversation: its exchanges replace these (before the first turn)."""
        self.exchanges = list(exchanges)

    def record(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)

    def messages(self, system_prompt: str, user_text: str | None = None) -> list[ChatMessage]:
        messages = [ChatMessage("system", system_prompt)]
        recent = self.exchanges[self.window_start() :] if self.max_turns else []
        for exchange in recent:
            if exchange.user_text is not None:
                messages.append(ChatMessage("user", exchange.user_text))
            if exchange.assistant_text:
                messages.append(ChatMessage("assistant", exchange.assistant_text))
        if user_text is not None:
            messages.append(ChatMessage("user", user_text))
        return messages

    def window_start(self) -> int:
        """Index of the oldest exchange in the prompt; moves by ``max_turns // 2`` at a time."""
        over = len(self.exchanges) - self.max_turns
        if over <= 0:
            return 0
        step = max(1, self.max_turns // 2)
        return -(-over // step) * step

    def amend_last(self, exchange: Exchange) -> None:
        """Replace the newest exchange (a reply cut short after it was recorded)."""
        if self.exchanges:
            self.exchanges[-1] = exchange
        else:
            self.exchanges.append(exchange)
