"""The device store and its command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from voxgate.cli import app
from voxgate.core.errors import ConfigError
from voxgate.store.devices import DeviceStore, normalize_mac


def test_tokens_authenticate_until_revoked_and_are_stored_hashed(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path / "v.db")
    device, token = store.add("kitchen", "aa-bb-cc-dd-ee-ff")
    other, other_token = store.add("desk")
    assert device.mac == "AA:BB:CC:DD:EE:FF"
    assert store.authenticate(token) == device
    assert store.authenticate(other_token) == other
    assert store.authenticate(token + "x") is None and store.authenticate("") is None
    assert store.by_mac("aa:bb:cc:dd:ee:ff") == device
    assert store.revoke("kitchen") and not store.revoke("kitchen")
    assert store.authenticate(token) is None
    assert store.authenticate(other_token) == other
    store.close()
    assert token.encode() not in (tmp_path / "v.db").read_bytes()


def test_duplicate_names_and_bad_macs_are_clear_errors(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path / "v.db")
    store.add("kitchen")
    with pytest.raises(ConfigError, match="exists"):
        store.add("kitchen")
    with pytest.raises(ConfigError, match="not a MAC"):
        normalize_mac("12:34")
    store.close()


def test_devices_command_line(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"VOXGATE_DATA_DIR": str(tmp_path)}
    added = runner.invoke(app, ["devices", "add", "toy", "--mac", "01:02:03:04:05:06"], env=env)
    assert added.exit_code == 0, added.output
    token = added.output.strip().splitlines()[-1]
    listed = runner.invoke(app, ["devices", "list"], env=env)
    assert "toy" in listed.output and "active" in listed.output
    assert runner.invoke(app, ["devices", "revoke", "toy"], env=env).exit_code == 0
    assert runner.invoke(app, ["devices", "revoke", "toy"], env=env).exit_code == 1
    store = DeviceStore(tmp_path / "voxgate.db")
    assert store.authenticate(token) is None and store.list()[0].name == "toy"
    store.close()
