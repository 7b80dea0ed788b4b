"""Sans-I/O parts of the server: rate limits and downlink pacing."""

from __future__ import annotations

import pytest

from voxgate.server import pacing
from voxgate.server.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_is_a_sliding_window_per_key() -> None:
    clock = FakeClock()
    limit = RateLimiter(2, clock=clock)
    assert limit.allow("a") and limit.allow("a") and not limit.allow("a")
    assert limit.allow("b")
    assert limit.retry_after_s("a") == pytest.approx(60)
    clock.now += 59.9
    assert not limit.allow("a")
    clock.now += 0.2
    assert limit.allow("a")


async def test_pacer_sends_at_most_the_prebuffer_ahead_of_real_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    monkeypatch.setattr(pacing.asyncio, "sleep", sleep)
    pacer = pacing.AudioPacer(prebuffer_ms=300, clock=clock)
    for _ in range(6):  # 6 x 120 ms, all ready at once
        await pacer.before_send(120)

    # Up to 300 ms ahead goes straight out; the 4th packet (360 ms ahead) waits 60 ms.
    assert slept[0] == pytest.approx(0.06)
    assert sum(slept) == pytest.approx((720 - 120 - 300) / 1000)
    pacer.reset()  # a new reply: its first 300 ms go straight out again
    await pacer.before_send(120)
    assert len(slept) == 3
