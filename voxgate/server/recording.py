"""A session's events as records for the write queue: its conversation is kept as it happens."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict

from voxgate.core.events import ErrorEvent, Event, Interrupted, LateUsage, TurnDone
from voxgate.pipeline.history import Exchange
from voxgate.store.records import Message
from voxgate.store.writer import (
    ConversationClosed,
    ConversationOpened,
    ErrorRecord,
    HeardUpdate,
    TurnRecord,
    TurnWriter,
    UsageRecord,
)


def new_conversation_id() -> str:
    return str(uuid.uuid4())


def exchanges_of(messages: list[Message]) -> list[Exchange]:
    """Stored messages (oldest first) as the exchanges a session's history holds: what the user
    said, and what of each reply they heard."""
    exchanges: list[Exchange] = []
    user_text: str | None = None
    for message in messages:
        if message.role == "user":
            user_text = message.text
            continue
        heard = message.heard_text if message.interrupted else message.text
        exchanges.append(Exchange(user_text, heard or "", message.interrupted))
        user_text = None
    return exchanges


class ConversationRecorder:
    """Observes one session (see ``TurnSession(observer=...)``); only queues, never waits."""

    def __init__(
        self,
        writer: TurnWriter,
        conversation_id: str,
        device_id: int,
        user_id: int | None,
        character_id: int | None,
        *,
        resumed: bool,
        lazy: bool = False,
    ) -> None:
        """``lazy``: the conversation is written only with its first turn or error (a session
        that waits for its wake word leaves no row until it is heard)."""
        self.conversation_id = conversation_id
        self.session_id = str(uuid.uuid4())
        self._writer = writer
        self._device_id = device_id
        self._user_id = user_id
        self._tickets: dict[int, int] = {}  # turn id → write-queue ticket
        self._turn_at: dict[int, float] = {}  # turn id → when it was written
        self._opening: ConversationOpened | None = ConversationOpened(
            conversation_id, device_id, user_id, character_id, resumed=resumed
        )
        if not lazy:
            self._open()

    def _open(self) -> None:
        if self._opening is not None:
            self._writer.submit(self._opening)
            self._opening = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, TurnDone | LateUsage | Interrupted | ErrorEvent):
            self._open()
        match event:
            case TurnDone():
                at = self._turn_at[event.turn_id] = time.time()
                self._tickets[event.turn_id] = self._writer.submit(
                    TurnRecord(
                        conversation_id=self.conversation_id,
                        session_id=self.session_id,
                        device_id=self._device_id,
                        user_id=self._user_id,
                        turn_id=event.turn_id,
                        # Only a greeting has no user text: spoken and typed turns without any
                        # end in an error, not a reply.
                        user_text=event.user_text or None,
                        reply_text=event.generated_text or event.reply_text,
                        heard_text=event.reply_text if event.interrupted else None,
                        interrupted=event.interrupted,
                        timings=asdict(event.timings),
                        usage=event.usage,
                        at=at,
                    )
                )
            case LateUsage(turn_id, usage) if turn_id in self._turn_at:
                self._writer.submit(
                    UsageRecord(
                        self.conversation_id,
                        self._device_id,
                        self._user_id,
                        usage,
                        self._turn_at[turn_id],
                    )
                )
            case Interrupted(turn_id, heard_text) if turn_id in self._tickets:
                # Cut short while still playing, after the turn was written.
                self._writer.submit(
                    HeardUpdate(self.conversation_id, turn_id, heard_text, self.session_id)
                )
            case ErrorEvent():
                self._writer.submit(
                    ErrorRecord(self._device_id, self.conversation_id, event.code, event.message)
                )

    def ticket(self, turn_id: int) -> int:
        """The write-queue ticket of a finished turn (0: nothing to wait for)."""
        return self._tickets.get(turn_id, 0)

    def close(self) -> None:
        if self._opening is None:  # opened: a lazy one that never was has nothing to close
            self._writer.submit(ConversationClosed(self.conversation_id))
