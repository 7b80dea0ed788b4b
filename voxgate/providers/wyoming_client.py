"""The Wyoming plumbing the Wyoming STT and TTS providers share: the server's address settings, one
TCP connection per request (as Home Assistant does), voxgate's own codec for the framing, and
failures as :class:`ProviderError`.

No retries here: an error's ``retryable`` tells the layer above (which owns retries and fallback)
whether trying again may help.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pydantic import BaseModel, Field

from voxgate.core.errors import ErrorCode, ProviderError
from voxgate.protocols.wyoming import (
    WyomingDecoder,
    WyomingEvent,
    WyomingLimits,
    WyomingProtocolError,
)

READ_BYTES = 64 * 1024
_RETRYABLE_CODES = frozenset({"rate_limited", "shutting_down", "unavailable", "loading_models"})


class WyomingServerSettings(BaseModel):
    """Where the Wyoming server is (mixed into each provider's settings)."""

    host: str = "127.0.0.1"
    timeout_s: float = Field(30.0, gt=0)
    """Connecting, and each wait for the server's next event, at most."""
    max_payload_bytes: int = Field(4 << 20, ge=1024)
    """One event's payload from the server at most (an audio chunk)."""


class WyomingChannel:
    """One request's connection: events out, the server's events in."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        server: str,
        code: ErrorCode,
        settings: WyomingServerSettings,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._server = server
        self._code = code
        self._timeout_s = settings.timeout_s
        self._decoder = WyomingDecoder(WyomingLimits(max_payload_bytes=settings.max_payload_bytes))
        self._pending: list[WyomingEvent] = []

    async def send(self, *events: bytes) -> None:
        self._writer.write(b"".join(events))
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._writer.drain()
        except TimeoutError:
            raise self.failure("does not read what it is sent", retryable=True) from None
        except OSError as exc:
            raise self.failure(f"connection lost: {exc}", retryable=True) from exc

    async def next_event(self) -> WyomingEvent:
        """The server's next event; an ``error`` event, a closed connection, a broken frame
        or a silent server raise ProviderError."""
        while not self._pending:
            try:
                async with asyncio.timeout(self._timeout_s):
                    data = await self._reader.read(READ_BYTES)
            except TimeoutError:
                raise self.failure(
                    f"sent nothing for {self._timeout_s:.0f} s", retryable=True
                ) from None
            except OSError as exc:
                raise self.failure(f"connection lost: {exc}", retryable=True) from exc
            if not data:
                raise self.failure("closed the connection before answering", retryable=True)
            try:
                self._pending = self._decoder.receive_data(data)
            except WyomingProtocolError as exc:
                raise self.failure(f"sent a broken event: {exc}") from None
        event = self._pending.pop(0)
        if event.type == "error":
            code = str(event.data.get("code") or "")
            text = str(event.data.get("text") or "no text")
            raise self.failure(
                f"answered error {code or '?'}: {text}", retryable=code in _RETRYABLE_CODES
            )
        return event

    def failure(self, what: str, *, retryable: bool = False) -> ProviderError:
        return ProviderError(f"{self._server} {what}", code=self._code, retryable=retryable)


@asynccontextmanager
async def wyoming_request(
    settings: WyomingServerSettings, port: int, section: str, code: ErrorCode
) -> AsyncIterator[WyomingChannel]:
    """A connection to the server for one request, closed after it."""
    server = f"the Wyoming {section.upper()} server at {settings.host}:{port}"
    try:
        async with asyncio.timeout(settings.timeout_s):
            reader, writer = await asyncio.open_connection(settings.host, port)
    except TimeoutError:
        raise ProviderError(
            f"cannot connect to {server}: timed out", code=code, retryable=True
        ) from None
    except OSError as exc:
        raise ProviderError(
            f"cannot connect to {server}: {exc}", code=code, retryable=True
        ) from exc
    try:
        yield WyomingChannel(reader, writer, server, code, settings)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
