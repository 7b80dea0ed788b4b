"""Hostile admin API input (issue 13 item 8): lone surrogates, integers of hundreds of digits and
NUL bytes are refused with a 400 that names the field, never a 500, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.test_admin_api import Api, any_api, api, db_url  # noqa: F401 (fixtures)
from voxgate.core.errors import StoreError

HUGE = "1" + "0" * 400
"""A JSON integer Python parses, but no float can hold."""


async def test_hostile_values_are_400_naming_the_field(any_api: Api) -> None:  # noqa: F811
    client = any_api
    await client.json("POST", "/devices", 201, json={"name": "toy"})
    raw_cases: list[tuple[str, str, str, str]] = [
        ("POST", "/users", '{"name": "ann\\ud800"}', "name: contains a lone surrogate"),
        ("POST", "/users", '{"name": "ann\\u0000"}', "name: contains a NUL"),
        ("POST", "/devices", '{"name": "\\udfff"}', "name: contains a lone surrogate"),
        ("PATCH", "/devices/toy", '{"pitch": ' + HUGE + "}", "pitch: expected 0.5-2.0"),
        ("PATCH", "/devices/toy", '{"volume": ' + HUGE + "}", "volume: expected 0-100"),
        ("PATCH", "/devices/toy", '{"language": "e\\u0000n"}', "language: contains a NUL"),
        (
            "PUT",
            "/characters/pirate",
            '{"name": "Arr", "system_prompt": "B", "pitch": -' + HUGE + "}",
            "pitch: expected 0.5-2.0",
        ),
        (
            "PUT",
            "/characters/pirate",
            '{"name": "Arr", "system_prompt": "be \\ud83d a pirate"}',
            "system_prompt: contains a lone surrogate",
        ),
    ]
    for method, path, body, expected in raw_cases:
        message = await client.error(
            method,
            path,
            400,
            "bad_request",
            content=body.encode(),
            headers={"content-type": "application/json"},
        )
        assert expected in message, (method, path, message)
        assert len(message) < 200  # the 400 digits are not echoed back
    assert await client.store.users.all() == []
    assert [d.name for d in await client.store.devices.all()] == ["toy"]


@pytest.mark.parametrize(
    "name", ["ann\x00", "ann\ud800", "tab\there", "del\x7f"], ids=["nul", "surrogate", "tab", "del"]
)
async def test_the_store_refuses_names_no_database_can_hold(api: Api, name: str) -> None:  # noqa: F811
    """The CLI reaches the store without the admin API: the store checks too."""
    with pytest.raises(StoreError):
        await api.store.users.add(name)
    with pytest.raises(StoreError):
        await api.store.devices.add(name)
    assert await api.store.users.all() == [] and await api.store.devices.all() == []


async def test_valid_unicode_still_goes_through(any_api: Api) -> None:  # noqa: F811
    body: Any = await any_api.json("POST", "/users", 201, json={"name": "Zoë 🦜"})
    assert body["user"]["name"] == "Zoë 🦜"
