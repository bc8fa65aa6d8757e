"""Flow control: an async token bucket (app-wide API budget) and a per-key sliding window."""

from __future__ import annotations

import asyncio
import time
from collections import deque


class TokenBucket:
    """`rate` tokens per second, at most `capacity` banked. acquire() waits its turn: FIFO within each of two
    lanes, and an `urgent` caller goes before every waiting normal one (a card's creation, the asker's first
    sign, before the streaming updates of answers already on screen)."""

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self._tokens = self.capacity
        self._updated = time.monotonic()
        self._lanes: tuple[deque[asyncio.Future], deque[asyncio.Future]] = (deque(), deque())  # urgent, normal
        self._pump: asyncio.Task | None = None

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

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
