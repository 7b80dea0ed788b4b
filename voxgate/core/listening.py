"""How a session listens: to everything the device sends (push to talk: the device decides when to
send), or only after its wake word. Chosen per protocol and, on the relay, per session."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ListeningMode(StrEnum):
    PUSH_TO_TALK = "push_to_talk"
    """Everything the device sends is the user talking (today's behaviour)."""
    WAKE_WORD = "wake_word"
    """The device streams all the time; nothing is transcribed, stored or billed until the wake
    word is heard."""


class FollowUp(StrEnum):
    """What the wake word opens."""

    TURN = "turn"
    """One turn: after the reply the session waits for the wake word again."""
    CONVERSATION = "conversation"
    """Turns until the user has been silent for the silence timeout."""


@dataclass(frozen=True, slots=True)
class WakeListening:
    """A session in ``wake_word`` mode."""

    wake_word: str
    """The engine's name for it (``"hey_jarvis"``)."""
    follow_up: FollowUp = FollowUp.CONVERSATION
    silence_s: float = 8.0
    """Conversation: seconds without speech (or a reply playing) after which it waits again."""
    pre_roll_ms: int = 300
    """Audio from before the engine fired that the conversation gets too: the wake word's tail
    (the engine fires 0.1 to 0.3 s after the word ends), so that a question said straight after
    the word is not cut."""
