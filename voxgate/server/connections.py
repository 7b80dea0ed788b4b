"""Limits on connections below the app: a deadline for a request's headers and a cap on open
connections, so slow or silent sockets cannot hold every file descriptor.

uvicorn's h11 protocol arms a timer only between keep-alive requests: a client that connects and
sends nothing, or sends its headers a byte at a time (slowloris), is held for as long as it
likes. The subclass below arms a deadline whenever it waits for a request's headers (on connect
and after each response) and closes the socket when it passes. A WebSocket upgrade has sent its
headers, so the deadline ends there.
"""

from __future__ import annotations

import asyncio
import logging
import resource

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

RESERVED_FDS = 128
"""Descriptors kept for everything but client connections: models, the database, logs."""


class GuardedH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0
    max_connections: int = 1000

    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            # Over the cap: drop it before it costs more than its descriptor, briefly.
            logger.warning("over %d connections: closing a new one", self.max_connections)
            transport.abort()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the headers are in (or the connection is done with)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # waiting for the next request's headers

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            logger.info(
                "closing a connection that sent no request within %.0f s", self.header_timeout_s
            )
            self.transport.abort()


def guarded_h11(header_timeout_s: float, max_connections: int) -> type[GuardedH11Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, with these limits."""
    return type(
        "VoxgateH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout_s": header_timeout_s, "max_connections": max_connections},
    )


def ensure_file_limit(max_connections: int) -> int:
    """Raise this process's soft descriptor limit towards what ``max_connections`` needs (up to
    the hard limit); warns when even that is short. Returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the file limit to %d: %s", raised, exc)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        logger.warning(
            "the file limit (%d) is below server.max_connections + %d (%d): raise it "
            "(LimitNOFILE= in the systemd unit, ulimit -n) or lower server.max_connections",
            soft,
            RESERVED_FDS,
            wanted,
        )
    return int(soft)
