"""What every kind of session does with its events: queue them, in order, for the one reader
(the transport), and show each to an observer (the recorder) as it is emitted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from voxgate.core.errors import ErrorCode
from voxgate.core.events import ErrorEvent, Event

logger = logging.getLogger(__name__)

TurnGate = Callable[[], bool]
"""False: the device is over its turn rate limit."""


class EventOutbox:
    def __init__(self, observer: Callable[[Event], None] | None = None) -> None:
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._observer = observer  # must not block: it runs on the audio path

    def emit(self, event: Event) -> None:
        self._queue.put_nowait(event)
        if self._observer is not None:
            try:
                self._observer(event)
            except Exception:  # recording must never break the conversation
                logger.exception("the session observer failed on %s", type(event).__name__)

    def end(self) -> None:
        """No more events: readers get None from now on."""
        self._queue.put_nowait(None)

    async def next(self, timeout_s: float | None = None) -> Event | None:
        """The next event, or None once ended (TimeoutError after ``timeout_s``)."""
        async with asyncio.timeout(timeout_s):
            event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)  # the end stays the end for every later read
        return event

    async def events(self) -> AsyncIterator[Event]:
        while (event := await self.next()) is not None:
            yield event

    @property
    def undelivered(self) -> int:
        """Events emitted that the reader has not taken yet."""
        return self._queue.qsize()

    def turn_allowed(self, turn_gate: TurnGate | None) -> bool:
        """Ask the turn gate (rate limit); a refused turn is reported, not answered."""
        if turn_gate is None or turn_gate():
            return True
        self.emit(ErrorEvent(ErrorCode.RATE_LIMITED, "too many turns; wait a little and try again"))
        return False
