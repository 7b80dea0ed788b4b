"""Running blocking engines off the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

Emit = Callable[[T], None]
"""Called by the worker thread with each item it produces."""


async def close_stream(iterator: AsyncIterator[object]) -> None:
    """Close an async iterator if it can be closed (an async generator): stops its producer now
    instead of when the garbage collector gets to it."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Done:
    pass


class _Item(Generic[T]):
    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


async def stream_from_thread(
    work: Callable[[Emit[T], threading.Event], None],
) -> AsyncIterator[T]:
    """Run ``work(emit, stop)`` in a worker thread and yield what it emits, on the event loop.

    ``work`` should check ``stop`` between items: closing this async iterator (a barge-in) sets it,
    so the blocking engine stops at its next step instead of running to the end.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[_Item[T] | _Failure | _Done] = asyncio.Queue()
    stop = threading.Event()

    def emit(value: T) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, _Item(value))

    def run() -> None:
        try:
            work(emit, stop)
        except BaseException as exc:  # re-raised in the consumer
            loop.call_soon_threadsafe(queue.put_nowait, _Failure(exc))
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _Done())

    worker = asyncio.ensure_future(asyncio.to_thread(run))
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _Done):
                break
            if isinstance(item, _Failure):
                raise item.exc
            yield item.value
    finally:
        stop.set()
        # Wait for the thread, so an engine behind a concurrency limit never runs two jobs at once.
        await asyncio.shield(worker)
