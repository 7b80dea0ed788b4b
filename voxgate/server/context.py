"""What every transport shares: settings, the loaded engines, devices, limits, metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from voxgate.core.config import CharacterSettings, Settings, TurnSettings
from voxgate.pipeline import Engines, TurnSession
from voxgate.server.metrics import Metrics
from voxgate.server.ratelimit import RateLimiter
from voxgate.store.devices import Device, DeviceStore, same_secret

SHARED_TOKEN_DEVICE = Device(id=0, name="shared-token", mac=None, created_at=0.0, revoked_at=None)
"""Who a connection is when it used the shared token rather than a device's own."""
BROWSER_DEVICE = Device(id=-1, name="browser", mac=None, created_at=0.0, revoked_at=None)
"""Who the web page is when it talks with the admin token."""


@dataclass
class ServerContext:
    settings: Settings
    engines: Engines
    devices: DeviceStore
    metrics: Metrics = field(default_factory=Metrics)
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)
    sessions: set[TurnSession] = field(default_factory=set)

    def __post_init__(self) -> None:
        server = self.settings.server
        self.connection_limit = RateLimiter(server.connections_per_minute)
        self.turn_limit = RateLimiter(server.turns_per_minute)

    def authenticate(self, token: str | None) -> Device | None:
        """A device token, or the shared token when one is configured."""
        if not token:
            return None
        server = self.settings.server
        if server.admin_token is not None and same_secret(
            token, server.admin_token.get_secret_value()
        ):
            return BROWSER_DEVICE
        if server.shared_token is not None and same_secret(
            token, server.shared_token.get_secret_value()
        ):
            return SHARED_TOKEN_DEVICE
        return self.devices.authenticate(token)

    def open_session(
        self,
        device: Device,
        *,
        output_rate_hz: int,
        turn: TurnSettings | None = None,
        character: CharacterSettings | None = None,
    ) -> TurnSession:
        """A new session for one connection; a reconnect starts clean."""
        key = f"device:{device.id}"
        session = TurnSession(
            self.engines,
            turn or self.settings.turn,
            character or self.settings.character,
            output_rate_hz=output_rate_hz,
            turn_gate=lambda: self.turn_limit.allow(key),
        )
        self.sessions.add(session)
        return session

    async def close_session(self, session: TurnSession) -> None:
        self.sessions.discard(session)
        await session.close()

    async def drain(self, grace_s: float) -> None:
        """Shutdown: refuse new sessions, give replies in flight ``grace_s`` to finish."""
        self.shutting_down.set()
        waits = [session.wait_idle() for session in list(self.sessions)]
        if waits:
            try:
                async with asyncio.timeout(grace_s):
                    await asyncio.gather(*waits)
            except TimeoutError:
                pass
