"""Flow control: an async token bucket (app-wide API budget) and a per-key sliding window."""

from __future__ import annotations

import asyncio
import time
from collections import deque


class TokenBucket:
    """`rate` tokens per second, at most `capacity` banked. acquire() waits its turn (FIFO)."""

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self._tokens = self.capacity
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
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
