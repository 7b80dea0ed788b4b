"""Reading conversations back: to continue one, to show one, to list them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from voxgate.core.errors import NotFoundError
from voxgate.store.database import Database
from voxgate.store.records import Conversation, Message
from voxgate.store.schema import CharacterRow, ConversationRow, DeviceRow, MessageRow, UserRow


@dataclass(frozen=True, slots=True)
class Resumed:
    conversation_id: str
    messages: list[Message]
    """Its last messages, oldest first (the oldest turn may have lost its user message)."""


def _message(row: MessageRow) -> Message:
    return Message(
        conversation_id=row.conversation_id,
        turn_id=row.turn_id,
        role=row.role,
        text=row.text,
        heard_text=row.heard_text,
        interrupted=row.interrupted,
        audio_s=row.audio_s,
        timings=row.timings,
        created_at=row.created_at,
        session_id=row.session_id,
    )


class Conversations:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def latest(
        self, device_id: int, character_id: int | None, max_turns: int
    ) -> Resumed | None:
        """The device's most recent conversation with this character, and its last turns'
        messages."""
        async with self._db.sessions() as session:
            conversation_id = await session.scalar(
                select(ConversationRow.id)
                .where(
                    ConversationRow.device_id == device_id,
                    ConversationRow.character_id.is_(None)
                    if character_id is None
                    else ConversationRow.character_id == character_id,
                )
                .order_by(ConversationRow.started_at.desc())
                .limit(1)
            )
            if conversation_id is None:
                return None
            # Two messages a turn at most; the oldest turn may come without its user message.
            rows = await session.scalars(
                select(MessageRow)
                .where(MessageRow.conversation_id == conversation_id)
                .order_by(MessageRow.created_at.desc(), MessageRow.id.desc())
                .limit(max_turns * 2)
            )
            messages = [_message(row) for row in reversed(list(rows))]
        return Resumed(conversation_id, messages)

    async def recent(
        self, *, device: str | None = None, limit: int = 50, before: float | None = None
    ) -> list[Conversation]:
        """Newest first."""
        turns = (
            select(func.count())
            .where(MessageRow.conversation_id == ConversationRow.id, MessageRow.role == "assistant")
            .scalar_subquery()
        )
        user = aliased(UserRow)
        character = aliased(CharacterRow)
        query = (
            select(ConversationRow, DeviceRow.name, user.name, character.slug, turns)
            .join(DeviceRow, ConversationRow.device_id == DeviceRow.id)
            .outerjoin(user, ConversationRow.user_id == user.id)
            .outerjoin(character, ConversationRow.character_id == character.id)
            .order_by(ConversationRow.started_at.desc())
            .limit(limit)
        )
        if device is not None:
            query = query.where(DeviceRow.name == device)
        if before is not None:
            query = query.where(ConversationRow.started_at < before)
        async with self._db.sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            Conversation(
                id=row.id,
                device=device_name,
                user=user_name,
                character=slug,
                started_at=row.started_at,
                ended_at=row.ended_at,
                turns=count,
            )
            for row, device_name, user_name, slug, count in rows
        ]

    async def messages(self, conversation_id: str) -> list[Message]:
        """Oldest first."""
        async with self._db.sessions() as session:
            exists = await session.scalar(
                select(ConversationRow.id).where(ConversationRow.id == conversation_id)
            )
            if exists is None:
                raise NotFoundError(f"no conversation {conversation_id!r}")
            rows = await session.scalars(
                select(MessageRow)
                .where(MessageRow.conversation_id == conversation_id)
                .order_by(MessageRow.created_at, MessageRow.id)
            )
            return [_message(row) for row in rows]

    async def history(self, device: str, limit: int = 50) -> list[Message]:
        """A device's last ``limit`` messages across its conversations, oldest first."""
        async with self._db.sessions() as session:
            device_id = await session.scalar(select(DeviceRow.id).where(DeviceRow.name == device))
            if device_id is None:
                raise NotFoundError(f"no device named {device!r}")
            rows = await session.scalars(
                select(MessageRow)
                .join(ConversationRow, MessageRow.conversation_id == ConversationRow.id)
                .where(ConversationRow.device_id == device_id)
                .order_by(MessageRow.created_at.desc(), MessageRow.id.desc())
                .limit(limit)
            )
            return [_message(row) for row in reversed(list(rows))]
