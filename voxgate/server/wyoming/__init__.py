"""Wyoming (Home Assistant) on TCP ports of its own, beside the HTTP server, with the same
engines, usage metering and limits (docs/protocols/wyoming.md).

``wyoming.port`` serves speech to text and text to speech; ``wyoming.tts_port``, if set, text to
speech alone. Started with the app once the engines are loaded (``voxgate serve --wyoming`` or
``[wyoming] enabled = true``), closed with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from voxgate.server.context import ServerContext
from voxgate.server.wyoming.connection import WyomingConnection
from voxgate.server.wyoming.service import Offer, WyomingService

logger = logging.getLogger(__name__)

__all__ = ["WyomingServer"]


class WyomingServer:
    def __init__(self, ctx: ServerContext) -> None:
        self.service = WyomingService(ctx)
        self._servers: list[asyncio.Server] = []
        self._connections: dict[asyncio.Task[None], WyomingConnection] = {}

    @property
    def ports(self) -> list[int]:
        """The ports listened on (a configured port 0 is the one the system chose)."""
        return [int(server.sockets[0].getsockname()[1]) for server in self._servers]

    @property
    def live_connections(self) -> int:
        """Connections admitted and not yet ended."""
        return sum(connection.live for connection in self._connections.values())

    async def start(self) -> None:
        settings = self.service.settings
        plan = [(settings.port, Offer(stt=True, tts=True))]
        if settings.tts_port is not None:
            plan.append((settings.tts_port, Offer(stt=False, tts=True)))
        try:
            for port, offer in plan:
                server = await asyncio.start_server(
                    self._client(offer),
                    settings.host,
                    port,
                    limit=self.service.limits.max_header_bytes,
                )
                self._servers.append(server)
        except BaseException:
            await self.close()
            raise
        logger.info("Wyoming on %s, ports %s", settings.host, self.ports)

    def _client(
        self, offer: Offer
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            connection = self._connections[task] = WyomingConnection(
                self.service, offer, reader, writer
            )
            try:
                await connection.run()
            finally:
                self._connections.pop(task, None)

        return serve

    async def close(self, grace_s: float = 0.0) -> None:
        """Stop listening; give requests in progress ``grace_s`` to be answered; then close
        every connection."""
        for server in self._servers:
            server.close()
        busy = [task for task, connection in self._connections.items() if connection.busy]
        if busy and grace_s > 0:
            await asyncio.wait(busy, timeout=grace_s)
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers = []
