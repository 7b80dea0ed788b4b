"""The ``voxgate`` commands that work on the store: db, users, devices, characters, history,
usage. :func:`add_store_commands` puts them on the main app (``voxgate/cli.py``)."""

from __future__ import annotations

import typer

from voxgate.commands.characters import characters_app
from voxgate.commands.db import db_app
from voxgate.commands.devices import devices_app, users_app
from voxgate.commands.reports import history, usage


def add_store_commands(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.add_typer(users_app, name="users")
    app.add_typer(devices_app, name="devices")
    app.add_typer(characters_app, name="characters")
    app.command("history")(history)
    app.command("usage")(usage)


__all__ = ["add_store_commands"]
