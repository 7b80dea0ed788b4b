"""Who may do what, decided in one place for every transport.

- **Limits are per device**, and a device on the shared token is its client address: every
  firmware with the built-in token is the one pseudo-device ``shared-token``, so one bucket for
  all of them let twelve of forty devices be refused, and one ``session_id`` namespace let a
  device that sent only silence get another's reply.
- **The shared token is for the voice-assistant-proxy firmware only** (``/v1/audio``, ``/ws``):
  it opens neither the relay (where a client may replace a character's prompt) nor the list of
  characters.
- **Prompts may be locked**: ``server.lock_prompts`` locks every character's system prompt
  against a relay client's ``session.start`` override, ``server.locked_characters`` (``toy``,
  the children's character, by default) some of them.
"""

from __future__ import annotations

from voxgate.core.config import ServerSettings
from voxgate.server.context import SHARED_TOKEN_DEVICE
from voxgate.store.records import Device

SHARED_TOKEN_PROTOCOLS = frozenset({"assistant_proxy"})
"""Where the shared token is accepted: the firmware that ships with it."""


def on_shared_token(device: Device) -> bool:
    return device.name == SHARED_TOKEN_DEVICE


def limit_key(device: Device, client_host: str | None) -> str:
    """The bucket of a device's connection, turn and session limits (and of its HTTP sessions'
    ids): the device, or for the shared token the device at this client address."""
    if on_shared_token(device):
        return f"device:{device.id}@{client_host or '?'}"
    return f"device:{device.id}"


def shared_token_refusal(device: Device, protocol: str) -> str | None:
    """Why this connection may not use the shared token here, or None."""
    if on_shared_token(device) and protocol not in SHARED_TOKEN_PROTOCOLS:
        return (
            "the shared token is for voice-assistant-proxy firmware (/v1/audio, /ws) only; "
            "use a device token (voxgate devices add NAME)"
        )
    return None


def prompt_override_refusal(
    server: ServerSettings, character_slug: str | None, replaces_prompt: bool
) -> str | None:
    """Why a client may not replace this character's system prompt, or None. ``character_slug``
    None is the configured default character."""
    if not replaces_prompt:
        return None
    if server.lock_prompts:
        return "system prompts are locked on this server (server.lock_prompts)"
    if character_slug is not None and character_slug in server.locked_characters:
        return (
            f"character {character_slug!r} does not allow its system prompt to be replaced "
            "(server.locked_characters)"
        )
    return None


class SessionCounts:
    """Sessions open per limit key, held to ``server.max_sessions_per_device``: sixty silent
    sessions of one device are refused after the cap, not kept."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: dict[str, int] = {}

    def claim(self, key: str) -> bool:
        """Count one more session for ``key``; False (nothing counted) when at the cap."""
        held = self._open.get(key, 0)
        if held >= self.cap:
            return False
        self._open[key] = held + 1
        return True

    def release(self, key: str) -> None:
        held = self._open.get(key, 0) - 1
        if held > 0:
            self._open[key] = held
        else:
            self._open.pop(key, None)

    def held(self, key: str) -> int:
        return self._open.get(key, 0)
