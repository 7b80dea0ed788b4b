"""server.policy on its own: limit keys, the shared token's scope, prompt locks, session caps."""

from __future__ import annotations

from voxgate.core.config import ServerSettings
from voxgate.server.policy import (
    SessionCounts,
    limit_key,
    prompt_override_refusal,
    shared_token_refusal,
)
from voxgate.store.records import Device

KITCHEN = Device(id=3, name="kitchen", mac=None, created_at=0.0, revoked_at=None)
SHARED = Device(id=9, name="shared-token", mac=None, created_at=0.0, revoked_at=None)


def test_limit_keys_split_the_shared_token_by_client_only() -> None:
    assert limit_key(KITCHEN, "10.0.0.1") == limit_key(KITCHEN, "10.0.0.2") == "device:3"
    assert limit_key(SHARED, "10.0.0.1") != limit_key(SHARED, "10.0.0.2")


def test_the_shared_token_is_for_the_proxy_firmware_only() -> None:
    assert shared_token_refusal(SHARED, "assistant_proxy") is None
    assert shared_token_refusal(SHARED, "relay") is not None
    assert shared_token_refusal(KITCHEN, "relay") is None


def test_prompt_locks() -> None:
    default = ServerSettings()
    assert prompt_override_refusal(default, "toy", replaces_prompt=True) is not None
    assert prompt_override_refusal(default, "storyteller", replaces_prompt=True) is None
    assert prompt_override_refusal(default, "toy", replaces_prompt=False) is None
    locked = ServerSettings(lock_prompts=True)
    assert prompt_override_refusal(locked, None, replaces_prompt=True) is not None
    unlocked = ServerSettings(locked_characters=[])
    assert prompt_override_refusal(unlocked, "toy", replaces_prompt=True) is None


def test_session_counts_hold_the_cap_per_key() -> None:
    counts = SessionCounts(2)
    assert counts.claim("a") and counts.claim("a") and not counts.claim("a")
    assert counts.claim("b")
    counts.release("a")
    assert counts.claim("a") and counts.held("a") == 2
    for _ in range(3):
        counts.release("a")
    assert counts.held("a") == 0
