"""``voxgate users`` and ``voxgate devices``: who may connect, and whose they are."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from voxgate.commands.common import (
    ConfigOption,
    console,
    fail,
    say,
    settings_from,
    when,
    with_store,
)
from voxgate.core.errors import NotFoundError, StoreError
from voxgate.store import Store
from voxgate.store.records import Device, User

users_app = typer.Typer(
    help="The people devices belong to (usage is counted per user).", no_args_is_help=True
)
devices_app = typer.Typer(
    help="Devices allowed to connect: tokens, owners, settings.", no_args_is_help=True
)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="The user's name (unique).")],
    config: ConfigOption = None,
) -> None:
    """Add a user."""

    async def add(store: Store) -> User:
        return await store.users.add(name)

    user = with_store(config, add)
    say(f"user {escape(user.name)} added (id {user.id})")


@users_app.command("list")
def users_list(config: ConfigOption = None) -> None:
    """The users, with how many devices each has."""

    async def read(store: Store) -> tuple[list[User], list[Device]]:
        return await store.users.all(), await store.devices.all()

    users, devices = with_store(config, read)
    if not users:
        say("no users yet: add one with `voxgate users add NAME`")
        return
    table = Table("id", "name", "devices", "added")
    for user in users:
        owned = sum(1 for device in devices if device.user == user.name)
        table.add_row(str(user.id), escape(user.name), str(owned), when(user.created_at))
    console.print(table)


@devices_app.command("add")
def devices_add(
    name: Annotated[str, typer.Argument(help="A name for the device (unique).")],
    mac: Annotated[
        str | None, typer.Option(help="Its MAC address (ElatoAI devices need it).")
    ] = None,
    user: Annotated[str | None, typer.Option(help="The user it belongs to.")] = None,
    config: ConfigOption = None,
) -> None:
    """Register a device and print its token (shown only this once)."""

    window_s = settings_from(config).server.elato_pairing_window_s

    async def add(store: Store) -> tuple[Device, str]:
        await refuse_taken(store, name, mac)
        return await store.devices.add(name, mac, user=user, pairing_window_s=window_s)

    device, token = with_store(config, add)
    if mac:
        say(
            f"ElatoAI pairing is open for {window_s / 60:.0f} min: power up (or reset) the "
            "device now; it fetches its token once and keeps it"
        )
    say(f"device {escape(device.name)} (id {device.id}) added. Its token, shown only now:")
    console.print(token, soft_wrap=True, markup=False, highlight=False)


@devices_app.command("pair")
def devices_pair(
    name: Annotated[str, typer.Argument(help="The ElatoAI device to pair again.")],
    config: ConfigOption = None,
) -> None:
    """Let an ElatoAI device fetch a new token (after a factory reset, or to replace a token
    that leaked): opens its pairing window; its earlier tokens stop working."""
    window_s = settings_from(config).server.elato_pairing_window_s

    async def pair(store: Store) -> Device:
        return await store.devices.pair(name, window_s)

    device = with_store(config, pair)
    say(
        f"device {escape(device.name)} may fetch its token for {window_s / 60:.0f} min; "
        "its earlier tokens no longer work"
    )


@devices_app.command("list")
def devices_list(config: ConfigOption = None) -> None:
    """The registered devices: owner, character, when added and last seen, active or revoked."""

    async def read(store: Store) -> list[Device]:
        return await store.devices.all()

    devices = with_store(config, read)
    if not devices:
        say("no devices yet: add one with `voxgate devices add NAME`")
        return
    table = Table(
        "id",
        *(Column(key, no_wrap=True) for key in ("name", "MAC", "user", "character")),
        "added",
        "last seen",
        "status",
    )
    for device in devices:
        table.add_row(
            str(device.id),
            escape(device.name),
            device.mac or "",
            escape(device.user or ""),
            device.settings.character or "",
            when(device.created_at),
            when(device.last_seen_at) or "never",
            "active" if device.active else f"[red]revoked[/] {when(device.revoked_at)}",
        )
    console.print(table)


@devices_app.command("revoke")
def devices_revoke(
    name: Annotated[str, typer.Argument(help="The device to revoke.")], config: ConfigOption = None
) -> None:
    """Revoke a device's token: it can no longer connect."""

    async def revoke(store: Store) -> bool:
        await store.devices.by_name(name)  # unknown: a NotFoundError that says so
        return await store.devices.revoke(name)

    if not with_store(config, revoke):
        fail(f"device {name!r} is revoked already")
    say(f"device {escape(name)} revoked")


@devices_app.command("set")
def devices_set(
    name: Annotated[str, typer.Argument(help="The device to change.")],
    user: Annotated[str | None, typer.Option(help="Give it to this user.")] = None,
    no_user: Annotated[bool, typer.Option("--no-user", help="It belongs to no one.")] = False,
    character: Annotated[
        str | None, typer.Option(help="Its character (see `voxgate characters list`).")
    ] = None,
    no_character: Annotated[
        bool, typer.Option("--no-character", help="Back to the server's default character.")
    ] = False,
    volume: Annotated[int | None, typer.Option(help="Speaker volume, 0-100.")] = None,
    pitch: Annotated[float | None, typer.Option(help="Voice pitch, 0.5-2.0 (1: as is).")] = None,
    language: Annotated[str | None, typer.Option(help="Language code, e.g. en.")] = None,
    config: ConfigOption = None,
) -> None:
    """Change a device's owner or settings; only the options given change."""
    if user is not None and no_user:
        fail("give --user or --no-user, not both")
    if character is not None and no_character:
        fail("give --character or --no-character, not both")
    changes: dict[str, Any] = {
        key: value
        for key, value in (
            ("user", user),
            ("character", character),
            ("volume", volume),
            ("pitch", pitch),
            ("language", language),
        )
        if value is not None
    }
    if no_user:
        changes["user"] = None
    if no_character:
        changes["character"] = None
    if not changes:
        fail("nothing to change: give --user, --character, --volume, --pitch or --language")

    async def configure(store: Store) -> Device:
        return await store.devices.configure(name, **changes)

    device = with_store(config, configure)
    settings = device.settings
    say(
        f"device {escape(device.name)}: user {escape(device.user or '-')}, "
        f"character {settings.character or 'default'}, "
        f"volume {_or_default(settings.volume)}, pitch {_or_default(settings.pitch)}, "
        f"language {_or_default(settings.language)}"
    )


async def refuse_taken(store: Store, name: str, mac: str | None) -> None:
    """A clear error when a device already has this name or MAC."""
    try:
        taken = await store.devices.by_name(name.strip())
    except NotFoundError:
        pass
    else:
        raise StoreError(f"a device named {taken.name!r} exists (id {taken.id})")
    found = await store.devices.by_mac(mac) if mac else None
    if found is not None:
        raise StoreError(f"device {found.name!r} has MAC {found.mac} already")


def _or_default(value: object) -> str:
    return "default" if value is None else str(value)
