"""Every store command of the ``voxgate`` CLI, on SQLite in a temporary data directory: what it
prints, what it changes, and clean errors (exit 1, no traceback) for bad input."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from tests.store_seed import seed
from voxgate.cli import app
from voxgate.core.config import Settings
from voxgate.store import Database, Store
from voxgate.store.characters import BUILT_IN
from voxgate.store.database import database_url

Cli = Callable[..., Result]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    runner = CliRunner()
    env = {
        "VOXGATE_DATA_DIR": str(tmp_path),
        "VOXGATE_DATABASE_URL": None,
        "VOXGATE_CONFIG": None,
        "COLUMNS": "200",  # rich tables at full width
    }

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), env=env)

    return invoke


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def fails(result: Result, message: str) -> None:
    """Exit 1, the message on stderr, and no traceback."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert message in " ".join(result.stderr.split()), result.stderr


def rows(output: str) -> list[list[str]]:
    """A rich table's body rows, as lists of cell texts."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


def in_store(tmp_path: Path, operation: Callable[[Store], object]) -> object:
    async def run() -> object:
        store = await Store.open(Settings(data_dir=tmp_path))
        try:
            result = operation(store)
            return await result if asyncio.iscoroutine(result) else result
        finally:
            await store.close()

    return asyncio.run(run())


# -- db ------------------------------------------------------------------------------------------


def test_db_upgrade_current_and_downgrade(cli: Cli, tmp_path: Path) -> None:
    assert "revision: none (empty database)" in ok(cli("db", "current"))
    assert "behind" in ok(cli("db", "current"))
    head = Database.head_revision()
    assert ok(cli("db", "upgrade")).strip() == f"migrated from none (empty database) to {head}"
    assert ok(cli("db", "upgrade")).strip() == f"already at revision {head}"  # twice: harmless
    current = ok(cli("db", "current"))
    assert f"revision: {head}" in current and "up to date" in current
    assert "down to none" in ok(cli("db", "downgrade", "base"))

    async def revision() -> str | None:
        database = Database(database_url(None, tmp_path))
        try:
            return await database.revision()
        finally:
            await database.close()

    assert asyncio.run(revision()) is None
    ok(cli("db", "upgrade", "0001"))
    assert asyncio.run(revision()) == "0001"
    assert "behind" in ok(cli("db", "current"))  # 0002 is not applied yet


def test_db_errors(cli: Cli) -> None:
    fails(cli("db", "downgrade", "nosuch"), "Can't locate revision identified by 'nosuch'")
    fails(cli("db", "upgrade", "nosuch"), "nosuch")
    assert cli("db", "downgrade").exit_code == 2  # REVISION is required (a usage error)


def test_a_database_url_that_cannot_work_is_a_clean_error(cli: Cli, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"VOXGATE_DATA_DIR": str(tmp_path), "VOXGATE_DATABASE_URL": "mysql://x@y/z"}
    result = runner.invoke(app, ["users", "list"], env=env)
    fails(result, "unsupported database 'mysql'")
    result = runner.invoke(app, ["db", "current"], env=env)
    fails(result, "unsupported database 'mysql'")


# -- users and devices ---------------------------------------------------------------------------


def test_users_add_and_list(cli: Cli) -> None:
    assert "no users yet" in ok(cli("users", "list"))
    assert ok(cli("users", "add", "ann")).strip() == "user ann added (id 1)"
    ok(cli("users", "add", "bob"))
    ok(cli("devices", "add", "toy", "--user", "ann"))
    listed = rows(ok(cli("users", "list")))
    assert [row[:3] for row in listed] == [["1", "ann", "1"], ["2", "bob", "0"]]
    fails(cli("users", "add", "ann"), "a user named 'ann' exists")
    fails(cli("users", "add", "  "), "a user name is 1-100 characters")


def test_devices_add_list_and_duplicates(cli: Cli) -> None:
    assert "no devices yet" in ok(cli("devices", "list"))
    ok(cli("users", "add", "ann"))
    added = ok(cli("devices", "add", "toy", "--mac", "aa-bb-cc-dd-ee-ff", "--user", "ann"))
    assert "device toy (id 1) added" in added
    token = added.strip().splitlines()[-1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    ok(cli("devices", "add", "desk"))
    listed = rows(ok(cli("devices", "list")))
    assert len(listed) == 2
    toy, desk = listed
    assert toy[:5] == ["1", "toy", "AA:BB:CC:DD:EE:FF", "ann", ""]
    assert (toy[6], toy[7]) == ("never", "active")
    assert desk[:5] == ["2", "desk", "", "", ""]
    fails(cli("devices", "add", "toy"), "a device named 'toy' exists")
    fails(cli("devices", "add", "lamp", "--mac", "AA:BB:CC:DD:EE:FF"), "'toy' has MAC")
    fails(cli("devices", "add", "lamp", "--mac", "12:34"), "not a MAC address: '12:34'")
    fails(cli("devices", "add", "lamp", "--user", "zoe"), "no user named 'zoe'")
    assert len(rows(ok(cli("devices", "list")))) == 2  # nothing half-added


def test_devices_revoke(cli: Cli) -> None:
    ok(cli("devices", "add", "toy"))
    assert ok(cli("devices", "revoke", "toy")).strip() == "device toy revoked"
    (toy,) = rows(ok(cli("devices", "list")))
    assert toy[7].startswith("revoked")
    fails(cli("devices", "revoke", "toy"), "device 'toy' is revoked already")
    fails(cli("devices", "revoke", "attic"), "no device named 'attic'")


def test_devices_set_changes_only_what_is_given(cli: Cli, tmp_path: Path) -> None:
    ok(cli("users", "add", "ann"))
    ok(cli("devices", "add", "toy"))
    out = ok(cli("devices", "set", "toy", "--user", "ann", "--character", "storyteller"))
    assert "user ann, character storyteller, volume default" in out
    out = ok(cli("devices", "set", "toy", "--volume", "30", "--pitch", "1.2", "--language", "fr"))
    assert "user ann, character storyteller, volume 30, pitch 1.2, language fr" in out
    out = ok(cli("devices", "set", "toy", "--no-user", "--no-character"))
    assert "user -, character default, volume 30, pitch 1.2, language fr" in out

    async def settings(store: Store) -> tuple[object, ...]:
        device = await store.devices.by_name("toy")
        s = device.settings
        return device.user, s.character, s.volume, s.pitch, s.language

    assert in_store(tmp_path, settings) == (None, None, 30, 1.2, "fr")


def test_devices_set_errors(cli: Cli) -> None:
    ok(cli("devices", "add", "toy"))
    fails(cli("devices", "set", "attic", "--volume", "3"), "no device named 'attic'")
    fails(cli("devices", "set", "toy", "--user", "zoe"), "no user named 'zoe'")
    fails(cli("devices", "set", "toy", "--character", "pirate"), "no character 'pirate'")
    fails(cli("devices", "set", "toy", "--volume", "300"), "volume must be 0-100, not 300")
    fails(cli("devices", "set", "toy", "--pitch", "9"), "pitch must be 0.5-2.0")
    fails(cli("devices", "set", "toy"), "nothing to change")
    fails(cli("devices", "set", "toy", "--user", "a", "--no-user"), "not both")
    assert cli("devices", "set", "toy", "--volume", "loud").exit_code == 2  # usage error


# -- characters ----------------------------------------------------------------------------------


def test_characters_list_and_show(cli: Cli) -> None:
    listed = rows(ok(cli("characters", "list")))
    assert [row[0] for row in listed] == [f"{c.slug} (built in)" for c in BUILT_IN]
    shown = ok(cli("characters", "show", "toy"))
    assert "name:          Pip" in shown
    assert "first message: Hi! I'm Pip." in shown
    assert "system prompt:" in shown and "five-year-old" in shown
    fails(cli("characters", "show", "pirate"), "no character 'pirate'")


def test_characters_add_replace_and_remove(cli: Cli) -> None:
    added = cli(
        "characters", "add", "pirate", "--name", "Arr", "--prompt", "You are a [pirate].",
        "--first-message", "Ahoy!", "--voice", "en_GB-alan", "--language", "en",
        "--description", "Talks like a pirate.",
    )  # fmt: skip
    assert ok(added).strip() == "character pirate added"
    shown = ok(cli("characters", "show", "pirate"))
    assert "Ahoy!" in shown and "en_GB-alan" in shown and "You are a [pirate]." in shown
    replaced = cli("characters", "add", "pirate", "--name", "Arrr", "--prompt", "Be brief.")
    assert ok(replaced).strip() == "character pirate replaced"
    shown = ok(cli("characters", "show", "pirate"))
    assert "name:          Arrr" in shown and "Ahoy!" not in shown  # replaced entirely
    ok(cli("devices", "add", "toy"))
    ok(cli("devices", "set", "toy", "--character", "pirate"))
    assert ok(cli("characters", "remove", "pirate")).strip() == "character pirate removed"
    assert "pirate" not in ok(cli("characters", "list"))
    (toy,) = rows(ok(cli("devices", "list")))
    assert toy[4] == ""  # back to the default character
    fails(cli("characters", "remove", "pirate"), "no character 'pirate'")


def test_characters_errors(cli: Cli) -> None:
    fails(
        cli("characters", "add", "Bad Slug", "--name", "x", "--prompt", "y"),
        "lowercase letters, digits",
    )
    fails(cli("characters", "add", "x", "--name", " ", "--prompt", "y"), "needs a name")
    fails(cli("characters", "remove", "toy"), "'toy' is built in")
    assert "toy (built in)" in ok(cli("characters", "list"))
    assert cli("characters", "add", "x", "--prompt", "y").exit_code == 2  # --name missing


# -- history and usage ---------------------------------------------------------------------------


def test_history_shows_who_said_what_what_was_heard_and_latency(cli: Cli, tmp_path: Path) -> None:
    in_store(tmp_path, seed)
    out = ok(cli("history", "toy"))
    table = rows(out)
    assert [(row[1], row[3]) for row in table if row[1]] == [
        ("you", ""),
        ("assistant", "812 ms"),
        ("you", ""),
        ("assistant", "640 ms"),  # a typed turn's latency
    ]
    assert "What is the capital of France?" in out
    assert "Tell me a [long] story" in out  # not taken for markup
    assert "interrupted; heard: Once upon a time" in out
    assert "Paris is the capital of France." in out
    assert "Hello" not in out  # another device's
    limited = rows(ok(cli("history", "toy", "--limit", "1")))
    assert [row[1] for row in limited if row[1]] == ["assistant"]
    fails(cli("history", "attic"), "no device named 'attic'")
    ok(cli("devices", "add", "lamp"))
    assert "no messages from lamp yet" in ok(cli("history", "lamp"))


def test_usage_per_user_per_day_with_a_total(cli: Cli, tmp_path: Path) -> None:
    in_store(tmp_path, seed)
    table = rows(ok(cli("usage")))
    assert table == [
        ["2025-01-10", "ann", "1", "0.15", "100", "20", "30", "0.001000"],
        ["2025-01-11", "(no user)", "1", "0.15", "100", "20", "30", "0.001000"],
        ["2025-01-11", "ann", "1", "0.15", "100", "20", "30", "0.001000"],
        ["total", "all", "3", "0.45", "300", "60", "90", "0.003000"],
    ]
    ann = rows(ok(cli("usage", "--user", "ann", "--since", "2025-01-11")))
    assert ann == [
        ["2025-01-11", "ann", "1", "0.15", "100", "20", "30", "0.001000"],
        ["total", "all", "1", "0.15", "100", "20", "30", "0.001000"],
    ]
    assert "no usage recorded since 2025-02-01" in ok(cli("usage", "--since", "2025-02-01"))
    fails(cli("usage", "--since", "11/01/2025"), "--since: not a date: '11/01/2025'")
    fails(cli("usage", "--since", "2025-02-30"), "not a date")
    fails(cli("usage", "--user", "zoe"), "no user named 'zoe'")


def test_an_old_schema_without_auto_migrate_says_to_upgrade(cli: Cli, tmp_path: Path) -> None:
    ok(cli("db", "current"))  # makes the (empty) database file
    runner = CliRunner()
    env = {"VOXGATE_DATA_DIR": str(tmp_path), "VOXGATE_DATABASE__AUTO_MIGRATE": "false"}
    fails(runner.invoke(app, ["devices", "list"], env=env), "run `voxgate db upgrade`")
