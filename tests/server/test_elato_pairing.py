"""Issue 13 item 1: knowing an ElatoAI device's MAC is not enough to get its token.

Tokens are issued only while the device pairs (after an admin adds it with its MAC, or pairs it
again) and until it first connects; one answer for unknown, revoked and not-pairing MACs; a rate
limit per client; pairing again voids earlier tokens; expiring tokens are renewed with the old
one. The unmodified firmware's path (fetch once, keep it, reconnect with it) keeps working."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import jwt
import pytest
from websockets.exceptions import InvalidStatus

from tests.fakes import bounded
from tests.server.test_elato_session import (
    MAC,
    OTHER_MAC,
    SECRET,
    Device,
    Rig,
    device_connect,
    elato_server,
)
from voxgate.protocols.elato import verify_token

ENDPOINT = "/api/generate_auth_token"


async def _fetch(rig: Rig, mac: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with rig.http() as client:
        return await client.get(ENDPOINT, params={"macAddress": mac}, headers=headers)


async def _upgrade_status(rig: Rig, token: str, mac: str = MAC) -> int:
    """101 if the device gets in (and its ``auth`` message), else the HTTP status refused with."""
    try:
        async with device_connect(rig.address, token, mac) as ws:
            assert (await Device(ws).auth())["type"] == "auth"
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


@bounded(40)
async def test_a_known_mac_gets_no_token_once_the_device_has_paired(tmp_path: Path) -> None:
    async with elato_server(tmp_path, register=(MAC, OTHER_MAC)) as rig:
        # Within the window, as the firmware does at its first Wi-Fi connection (retries too).
        first = await _fetch(rig, MAC)
        retry = await _fetch(rig, MAC)
        assert first.status_code == retry.status_code == 200
        token = first.json()["token"]
        assert await _upgrade_status(rig, token) == 101
        await rig.store.writer.flush(5)
        # Paired: an attacker who knows the MAC gets nothing; the device keeps working.
        after = await _fetch(rig, MAC)
        assert await _upgrade_status(rig, token) == 101  # it reconnects with the kept token
        # The window of a device that never came also closes, by time.
        await rig.store.devices.revoke("device-1")
        revoked = await _fetch(rig, OTHER_MAC)
        unknown = await _fetch(rig, "02:00:00:00:00:01")
    assert after.status_code == revoked.status_code == unknown.status_code == 403
    assert after.json() == revoked.json() == unknown.json()  # nothing tells them apart


@bounded(40)
async def test_the_window_closes_by_time(tmp_path: Path) -> None:
    async with elato_server(tmp_path, register=(), elato_pairing_window_s=0.5) as rig:
        await rig.store.devices.add("late", MAC, pairing_window_s=0.5)
        await asyncio.sleep(0.7)
        late = await _fetch(rig, MAC)
        device = await rig.store.devices.pair("late", 30)
        again = await _fetch(rig, MAC)
    assert late.status_code == 403
    assert again.status_code == 200 and device.token_generation == 1


@bounded(40)
async def test_pairing_again_voids_the_earlier_tokens(tmp_path: Path) -> None:
    async with elato_server(tmp_path) as rig:
        old = (await _fetch(rig, MAC)).json()["token"]
        assert await _upgrade_status(rig, old) == 101
        async with rig.http() as client:
            paired = await client.post(
                "/api/admin/devices/device-0/pair",
                headers={"Authorization": f"Bearer {rig_admin_token(tmp_path)}"},
            )
        assert paired.status_code == 200, paired.text
        assert paired.json()["device"]["pairing_until"] > time.time()
        new = (await _fetch(rig, MAC)).json()["token"]
        old_status = await _upgrade_status(rig, old)
        new_status = await _upgrade_status(rig, new)
    assert verify_token(SECRET, new, mac=MAC).generation == 1
    assert old_status == 401 and new_status == 101


def rig_admin_token(data_dir: Path) -> str:
    """The admin token the server generated into its data directory."""
    return (data_dir / "admin_token").read_text().strip()


@bounded(40)
async def test_token_requests_are_rate_limited_per_client(tmp_path: Path) -> None:
    async with elato_server(tmp_path, token_requests_per_minute=5) as rig:
        statuses = [(await _fetch(rig, f"02:00:00:00:00:{i:02X}")).status_code for i in range(8)]
        limited = await _fetch(rig, MAC)  # even a device that is pairing waits its turn
    assert statuses == [403] * 5 + [429] * 3
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


@bounded(40)
async def test_expiring_tokens_are_renewed_with_the_old_one(tmp_path: Path) -> None:
    async with elato_server(tmp_path, elato_token_ttl_s=2) as rig:
        token = (await _fetch(rig, MAC)).json()["token"]
        assert jwt.decode(token, options={"verify_signature": False})["exp"] > time.time()
        assert await _upgrade_status(rig, token) == 101
        await asyncio.sleep(3.1)
        expired = await _upgrade_status(rig, token)
        renewed = await _fetch(rig, MAC, token)  # pairing is over: only the old token helps
        fresh = renewed.json()["token"]
        fresh_status = await _upgrade_status(rig, fresh)
        stranger = await _fetch(rig, MAC)
        wrong_mac = await _fetch(rig, OTHER_MAC, token)
    assert expired == 401
    assert renewed.status_code == 200 and fresh != token and fresh_status == 101
    assert stranger.status_code == 403 and wrong_mac.status_code == 403


@pytest.mark.parametrize("forged", ["not-a-jwt", "a.b.c"])
@bounded(30)
async def test_a_forged_renewal_is_refused(tmp_path: Path, forged: str) -> None:
    async with elato_server(tmp_path, register=(), elato_pairing_window_s=0.1) as rig:
        refused = await _fetch(rig, MAC, forged)
    assert refused.status_code == 403
