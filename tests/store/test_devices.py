"""A device's token from the command line to the store: printed once, accepted until revoked,
never stored in the clear."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from voxgate.cli import app
from voxgate.core.config import Settings
from voxgate.core.errors import ConfigError
from voxgate.store import Store
from voxgate.store.devices import normalize_mac


def _authenticates(data_dir: Path, token: str) -> str | None:
    """The name of the device ``token`` belongs to, if it is active."""

    async def check() -> str | None:
        store = await Store.open(Settings(data_dir=data_dir))
        try:
            device = await store.devices.authenticate(token)
            return None if device is None else device.name
        finally:
            await store.close()

    return asyncio.run(check())


def test_a_token_from_devices_add_works_until_devices_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"VOXGATE_DATA_DIR": str(tmp_path), "VOXGATE_DATABASE_URL": None, "COLUMNS": "200"}
    added = runner.invoke(app, ["devices", "add", "toy", "--mac", "01:02:03:04:05:06"], env=env)
    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[-1]
    other = runner.invoke(app, ["devices", "add", "desk"], env=env).stdout.strip().splitlines()[-1]
    assert _authenticates(tmp_path, token) == "toy"
    assert _authenticates(tmp_path, other) == "desk"
    assert _authenticates(tmp_path, token[:-1]) is None
    listed = runner.invoke(app, ["devices", "list"], env=env).stdout
    assert "01:02:03:04:05:06" in listed
    assert token not in listed  # shown once, at add
    revoked = runner.invoke(app, ["devices", "revoke", "toy"], env=env)
    assert revoked.exit_code == 0, revoked.output
    assert _authenticates(tmp_path, token) is None
    assert _authenticates(tmp_path, other) == "desk"  # the others are untouched
    again = runner.invoke(app, ["devices", "revoke", "toy"], env=env)
    assert again.exit_code == 1 and "revoked already" in again.stderr
    database = tmp_path / "voxgate.db"
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("voxgate.db*"))
    assert database.is_file() and token.encode() not in stored


@pytest.mark.parametrize(
    ("given", "normalized"),
    [("aa-bb-cc-dd-ee-ff", "AA:BB:CC:DD:EE:FF"), (" 01:02:03:0a:0B:0c ", "01:02:03:0A:0B:0C")],
)
def test_mac_addresses_are_normalized(given: str, normalized: str) -> None:
    assert normalize_mac(given) == normalized


@pytest.mark.parametrize("bad", ["12:34", "AA:BB:CC:DD:EE:FG", "AABBCCDDEEFF", ""])
def test_bad_mac_addresses_are_clear_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="not a MAC address"):
        normalize_mac(bad)


async def test_pseudo_devices_made_at_once_are_one(tmp_path: Path) -> None:
    """The first connections on the shared token arrive together, each on its own database
    connection (found by bench/fuzz.py: the loser's request failed with IntegrityError)."""
    stores = [await Store.open(Settings(data_dir=tmp_path)) for _ in range(4)]
    try:
        made = await asyncio.gather(
            *(store.devices.ensure("shared-token") for store in stores for _ in range(3))
        )
    finally:
        for store in stores:
            await store.close()
    assert len({device.id for device in made}) == 1
