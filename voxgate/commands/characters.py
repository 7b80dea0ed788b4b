"""``voxgate characters``: the personas devices talk to."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from voxgate.commands.common import ConfigOption, console, fail, say, with_store
from voxgate.store import Store
from voxgate.store.characters import BUILT_IN
from voxgate.store.records import Character

characters_app = typer.Typer(
    help="Characters: name, system prompt, greeting, voice.", no_args_is_help=True
)

BUILT_IN_SLUGS = frozenset(character.slug for character in BUILT_IN)


@characters_app.command("list")
def characters_list(config: ConfigOption = None) -> None:
    """The characters (built-in ones are re-added at start if removed from the database)."""

    async def read(store: Store) -> list[Character]:
        return await store.characters.all()

    table = Table("slug", "name", "language", "voice", "description")
    for character in with_store(config, read):
        built_in = " (built in)" if character.slug in BUILT_IN_SLUGS else ""
        table.add_row(
            character.slug + built_in,
            escape(character.name),
            character.language or "",
            escape(character.voice or ""),
            escape(character.description),
        )
    console.print(table)


@characters_app.command("show")
def characters_show(
    slug: Annotated[str, typer.Argument(help="The character's slug.")], config: ConfigOption = None
) -> None:
    """Everything about one character, its system prompt included."""

    async def read(store: Store) -> Character:
        return await store.characters.get(slug)

    character = with_store(config, read)
    fields = [
        ("slug", character.slug),
        ("name", character.name),
        ("description", character.description),
        ("first message", character.first_message),
        ("voice", character.voice),
        ("language", character.language),
        ("pitch", None if character.pitch is None else str(character.pitch)),
    ]
    for label, value in fields:
        say(f"[bold]{label + ':':14}[/] {escape(value or '-')}")
    say("[bold]system prompt:[/]")
    console.print(character.system_prompt, markup=False, highlight=False)


@characters_app.command("add")
def characters_add(
    slug: Annotated[str, typer.Argument(help="Its id: lowercase letters, digits, - and _.")],
    name: Annotated[str, typer.Option(help="The name it goes by.")],
    prompt: Annotated[str, typer.Option(help="Its system prompt.")],
    first_message: Annotated[
        str | None, typer.Option(help="Spoken as the greeting when a session starts.")
    ] = None,
    voice: Annotated[str | None, typer.Option(help="A TTS voice (default: the server's).")] = None,
    language: Annotated[str | None, typer.Option(help="Language code, e.g. en.")] = None,
    description: Annotated[str, typer.Option(help="One line about it, for lists.")] = "",
    pitch: Annotated[
        float | None, typer.Option(min=0.5, max=2.0, help="Voice pitch, 0.5-2.0 (1: as is).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Add a character, or replace the one with this slug (every field, not just those given)."""
    character = Character(
        slug=slug,
        name=name,
        system_prompt=prompt,
        description=description,
        first_message=first_message,
        voice=voice,
        language=language,
        pitch=pitch,
    )

    async def save(store: Store) -> bool:
        existed = any(known.slug == slug for known in await store.characters.all())
        await store.characters.save(character)
        return existed

    replaced = with_store(config, save)
    say(f"character {slug} {'replaced' if replaced else 'added'}")


@characters_app.command("remove")
def characters_remove(
    slug: Annotated[str, typer.Argument(help="The character's slug.")], config: ConfigOption = None
) -> None:
    """Remove a character; devices that used it go back to the server's default."""
    if slug in BUILT_IN_SLUGS:
        fail(
            f"{slug!r} is built in and would come back at the next start; "
            f"change it instead with `voxgate characters add {slug} ...`"
        )

    async def delete(store: Store) -> None:
        await store.characters.delete(slug)

    with_store(config, delete)
    say(f"character {slug} removed")
