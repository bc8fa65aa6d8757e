"""Flow control: an async token bucket (app-wide API budget) and a per-key sliding window.

The bucket adapts to the server's own limit (additive increase, multiplicative decrease, as TCP does): a call the
server refused for its rate (`slow_down`) halves the rate and empties the bank; each second without a refusal
gives back a tenth of the configured rate. So replicas of one app, or another program using the same AppKey, that
together exceed DingTalk's per-app limit settle on their shares after a refusal or two instead of being refused
over and over; with the server's limit to itself the bucket keeps the configured rate."""

from __future__ import annotations

import asyncio
import time
from collections import deque


class TokenBucket:
    """`rate` tokens per second, at most `capacity` banked. acquire() waits its turn: FIFO within each of two
    lanes, and an `urgent` caller goes before every waiting normal one (a card's creation, the asker's first
    sign, before the streaming updates of answers already on screen)."""

    RECOVERY_PER_S = 0.1  # of the configured rate, given back per second without a refusal
    FLOOR = 0.1  # the rate never drops below this share of the configured one

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        self.rate = self.configured_rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self._tokens = self.capacity
        self._updated = time.monotonic()
        self._lanes: tuple[deque[asyncio.Future], deque[asyncio.Future]] = (deque(), deque())  # urgent, normal
        self._pump: asyncio.Task | None = None

    def _refill(self) -> None:
        now = time.monotonic()
        elapsed = now - self._updated
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        if self.rate < self.configured_rate:
            self.rate = min(self.configured_rate, self.rate + elapsed * self.configured_rate * self.RECOVERY_PER_S)
        self._updated = now

    def slow_down(self) -> None:
        """The server refused a call for its rate: halve ours (not below FLOOR of the configured rate) and
        empty the bank, so the next calls wait for the server's window to pass."""
        self._refill()
        self.rate = max(self.configured_rate * self.FLOOR, self.rate / 2)
        self._tokens = 0.0

    async def acquire(self, urgent: bool = False) -> None:
        if not any(self._lanes) and self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._lanes[0 if urgent else 1].append(waiter)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._serve())
        await waiter  # cancelled: the pump skips it

    def _next(self) -> asyncio.Future | None:
        for lane in self._lanes:
            while lane and lane[0].done():
                lane.popleft()
            if lane:
                return lane.popleft()
        return None

    async def _serve(self) -> None:
        while any(self._lanes):
            self._refill()
            if self._tokens >= 1.0:
                waiter = self._next()
                if waiter is not None:
                    self._tokens -= 1.0
                    waiter.set_result(None)
                continue
            await asyncio.sleep((1.0 - self._tokens) / self.rate)

    def try_acquire(self) -> bool:
        """Take a token if one is banked now; never waits (for optional calls, such as queue positions)."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class SlidingWindowLimiter:
    """At most `limit` events per `window_s` per key."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._events: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        events = self._events.setdefault(key, deque())
        while events and now - events[0] >= self.window_s:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        if len(self._events) > 10_000:  # forget idle keys
            for stale in [k for k, v in self._events.items() if not v or now - v[-1] >= self.window_s]:
                del self._events[stale]
        return True
