"""Characters: the personas a device can talk to. A few good ones ship with voxgate."""

from __future__ import annotations

import re
import time
from dataclasses import asdict

from sqlalchemy import select

from voxgate.core.errors import NotFoundError, StoreError
from voxgate.store.database import Database
from voxgate.store.errors import StoreConflict
from voxgate.store.records import Character
from voxgate.store.schema import CharacterRow
from voxgate.store.text import check_name, check_storable

_SPOKEN = (
    " Your words are spoken aloud: no lists, markdown, emojis or stage directions, and never more "
    "than two or three short sentences unless asked for more."
)

BUILT_IN: tuple[Character, ...] = (
    Character(
        slug="assistant",
        name="Vox",
        description="A plain, helpful voice assistant.",
        system_prompt=(
            "You are Vox, a friendly voice assistant. Answer in one or two short, plain sentences."
            + _SPOKEN
        ),
    ),
    Character(
        slug="toy",
        name="Pip",
        description="A cheerful talking toy for children aged 4 to 8.",
        system_prompt=(
            "You are Pip, a cheerful talking toy and a child's friend. Use simple words a "
            "five-year-old knows, be warm and playful, ask one small question back now and then. "
            "Keep everything safe and kind for children: no scary, violent or grown-up topics, "
            "never ask for personal details such as their address, and if something sounds "
            "dangerous or sad, gently suggest they talk to a grown-up they trust." + _SPOKEN
        ),
        first_message="Hi! I'm Pip. What shall we play today?",
    ),
    Character(
        slug="storyteller",
        name="Tilly",
        description="Tells short stories, made up on the spot, about whatever you ask.",
        system_prompt=(
            "You are Tilly, a storyteller. When asked for a story, tell a short, vivid one in "
            "a few sentences at a time, then ask what should happen next. Otherwise chat warmly "
            "about stories and books. Your words are spoken aloud: no lists, markdown or emojis."
        ),
        first_message="Hello, I'm Tilly. Shall I tell you a story?",
    ),
)

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def _record(row: CharacterRow) -> Character:
    return Character(
        slug=row.slug,
        name=row.name,
        system_prompt=row.system_prompt,
        description=row.description,
        first_message=row.first_message,
        voice=row.voice,
        language=row.language,
        pitch=row.pitch,
    )


class Characters:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def install_built_in(self) -> None:
        """Add the shipped characters that are missing (an operator's edits are kept). Replicas
        starting together may add them at once: the one that loses the race finds them there."""
        try:
            await self._add_missing_built_in()
        except StoreConflict:
            await self._add_missing_built_in()

    async def _add_missing_built_in(self) -> None:
        async with self._db.sessions.begin() as session:
            present = set(await session.scalars(select(CharacterRow.slug)))
            for character in BUILT_IN:
                if character.slug not in present:
                    session.add(CharacterRow(**asdict(character), created_at=time.time()))

    async def all(self) -> list[Character]:
        async with self._db.sessions() as session:
            rows = await session.scalars(select(CharacterRow).order_by(CharacterRow.id))
            return [_record(row) for row in rows]

    async def get(self, slug: str) -> Character:
        async with self._db.sessions() as session:
            row = await session.scalar(select(CharacterRow).where(CharacterRow.slug == slug))
        if row is None:
            raise NotFoundError(f"no character {slug!r} (see `voxgate characters list`)")
        return _record(row)

    async def id_of(self, slug: str) -> int:
        async with self._db.sessions() as session:
            found = await session.scalar(select(CharacterRow.id).where(CharacterRow.slug == slug))
        if found is None:
            raise NotFoundError(f"no character {slug!r} (see `voxgate characters list`)")
        return found

    async def save(self, character: Character) -> Character:
        """Add a character, or replace the one with its slug."""
        if not _SLUG.fullmatch(character.slug):
            raise StoreError(
                f"a character's id is lowercase letters, digits, - and _ (not {character.slug!r})"
            )
        if not character.name.strip() or not character.system_prompt.strip():
            raise StoreError("a character needs a name and a system prompt")
        check_name(character.name, "a character's name")
        for field, value in asdict(character).items():
            if isinstance(value, str):
                check_storable(value, f"the character's {field}")
        async with self._db.sessions.begin() as session:
            row = await session.scalar(
                select(CharacterRow).where(CharacterRow.slug == character.slug)
            )
            if row is None:
                session.add(CharacterRow(**asdict(character), created_at=time.time()))
            else:
                for key, value in asdict(character).items():
                    setattr(row, key, value)
        return character

    async def delete(self, slug: str) -> None:
        try:
            async with self._db.sessions.begin() as session:
                row = await session.scalar(select(CharacterRow).where(CharacterRow.slug == slug))
                if row is None:
                    raise NotFoundError(f"no character {slug!r}")
                await session.delete(row)
        except StoreConflict:  # pragma: no cover - foreign keys are SET NULL
            raise StoreConflict(f"character {slug!r} is in use") from None
