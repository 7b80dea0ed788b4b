"""Per-device limits: connections and turns per minute (a sliding window)."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, window_s: float = 60.0
    ) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._window_s = window_s
        self._events: defaultdict[str, deque[float]] = defaultdict(deque)

    def allow(self, key: str) -> bool:
        """Count one event for ``key`` if it is within the limit; False if it is not."""
        now = self._clock()
        events = self._events[key]
        while events and events[0] <= now - self._window_s:
            events.popleft()
        if len(events) >= self.per_minute:
            return False
        events.append(now)
        return True

    def retry_after_s(self, key: str) -> float:
        events = self._events.get(key)
        if not events:
            return 0.0
        return max(0.0, events[0] + self._window_s - self._clock())
