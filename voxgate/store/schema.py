"""The tables. Migrations (``voxgate/store/migrations``) create and change them; this module is
what the code reads and writes through.

Times are seconds since the Unix epoch (UTC), as floats: the same in SQLite and PostgreSQL, and
grouped by day in Python rather than with each database's own date functions.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints, so migrations can drop them by name on both databases.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class CharacterRow(Base):
    __tablename__ = "characters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    """How configs, the CLI and clients name it (``storyteller``)."""
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    system_prompt: Mapped[str] = mapped_column(Text)
    first_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    voice: Mapped[str | None] = mapped_column(String(200), nullable=True)
    language: Mapped[str | None] = mapped_column(String(16), nullable=True)
    pitch: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class DeviceRow(Base):
    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    mac: Mapped[str | None] = mapped_column(String(17), unique=True, nullable=True)
    token_sha256: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    """None for the server's own pseudo-devices (the web page), which have no token of their own."""
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True
    )
    character_id: Mapped[int | None] = mapped_column(
        ForeignKey("characters.id", ondelete="SET NULL"), nullable=True
    )
    volume: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pitch: Mapped[float | None] = mapped_column(Float, nullable=True)
    language: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_seen_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    pair_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    """ElatoAI pairing: until then (and until the device first connects) the token endpoint
    issues a token for this device's MAC; otherwise never."""
    token_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """ElatoAI tokens carry it; pairing again bumps it, and earlier tokens stop working."""


class ConversationRow(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    """A UUID made by the server when the conversation starts, so a session never waits on the
    database (and can keep talking while it is away)."""
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    character_id: Mapped[int | None] = mapped_column(
        ForeignKey("characters.id", ondelete="SET NULL"), nullable=True
    )
    started_at: Mapped[float] = mapped_column(Float, index=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    """When its last session ended; a later session of the same device and character reopens it."""


class MessageRow(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    session_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    """The session it was said in (a conversation resumed spans several; None before 0002)."""
    turn_id: Mapped[int] = mapped_column(Integer)
    """The turn's number within its session (both messages of a turn share it)."""
    role: Mapped[str] = mapped_column(String(16))
    """``user`` or ``assistant``."""
    text: Mapped[str] = mapped_column(Text)
    """User: the transcript or typed text. Assistant: the whole reply as generated."""
    heard_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Assistant: what the user heard, when they interrupted (else None: all of it)."""
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    audio_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    """User: seconds of speech transcribed. Assistant: seconds of reply audio synthesised."""
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """Assistant: the turn's per-stage timings in milliseconds (as in the relay ``turn.done``)."""
    created_at: Mapped[float] = mapped_column(Float, index=True)


class UsageRow(Base):
    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[str | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL"), nullable=True, index=True
    )
    device_id: Mapped[int | None] = mapped_column(
        ForeignKey("devices.id", ondelete="SET NULL"), nullable=True
    )
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True
    )
    capability: Mapped[str] = mapped_column(String(8))
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    audio_s: Mapped[float] = mapped_column(Float, default=0.0)
    characters: Mapped[int] = mapped_column(Integer, default=0)
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    tokens_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    compute_s: Mapped[float] = mapped_column(Float, default=0.0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[float] = mapped_column(Float, index=True)


class ErrorRow(Base):
    """Errors sessions reported to their devices, for the admin page."""

    __tablename__ = "errors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int | None] = mapped_column(
        ForeignKey("devices.id", ondelete="SET NULL"), nullable=True
    )
    conversation_id: Mapped[str | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL"), nullable=True
    )
    code: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    """When it first happened."""
    count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """Times it happened, from ``created_at`` to ``last_at``: repeats within
    ``database.error_repeat_window_s`` of the last one add to this row."""
    last_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
