"""How busy the assistant is: the measured service rate and the shedding rule built on it.

`ServiceRate` counts the messages answered per second of busy time (time with at least one message being
answered) over the last minute: the rate the box actually sustains, not the rate users happen to send at, so a
quiet hour does not make a later burst look hopeless. With fewer than `min_samples` answers in the window there
is no measurement, and `Shedding` never sheds without one.

`Shedding`: a new message's expected wait is the work before it (messages being answered + messages queued ahead
of it) divided by the service rate; above `max_expected_wait_s` (0: off) it is answered at once with a polite
busy notice naming the wait, instead of being queued for minutes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


class ServiceRate:
    """Messages finished per busy second over the last `window_s` seconds."""

    def __init__(self, window_s: float = 60.0, min_samples: int = 3, clock: Clock = time.monotonic) -> None:
        self.window_s, self.min_samples, self._clock = window_s, min_samples, clock
        self._done: deque[float] = deque()  # finish times
        self._busy: deque[tuple[float, float]] = deque()  # closed busy intervals (start, end)
        self._busy_since: float | None = None
        self._running = 0

    def started(self) -> None:
        if self._running == 0:
            self._busy_since = self._clock()
        self._running += 1

    def finished(self) -> None:
        now = self._clock()
        self._running = max(0, self._running - 1)
        self._done.append(now)
        if self._running == 0 and self._busy_since is not None:
            self._busy.append((self._busy_since, now))
            self._busy_since = None
        self._forget(now)

    def _forget(self, now: float) -> None:
        horizon = now - self.window_s
        while self._done and self._done[0] < horizon:
            self._done.popleft()
        while self._busy and self._busy[0][1] < horizon:
            self._busy.popleft()

    def per_second(self) -> float | None:
        """The measured rate, or None while there is no measurement yet."""
        now = self._clock()
        self._forget(now)
        if len(self._done) < self.min_samples:
            return None
        horizon = now - self.window_s
        busy = sum(end - max(start, horizon) for start, end in self._busy)
        if self._busy_since is not None:
            busy += now - max(self._busy_since, horizon)
        return len(self._done) / busy if busy > 0 else None

    def expected_wait(self, ahead: int, in_flight: int) -> float | None:
        """A new message's expected wait: the work before it / the measured rate; None without a measurement."""
        rate = self.per_second()
        return None if rate is None else (ahead + in_flight) / rate


@dataclass(frozen=True)
class Decision:
    shed: bool
    expected_wait_s: float | None  # None: no measurement yet


@dataclass
class Shedding:
    max_expected_wait_s: float  # 0: never shed
    rate: ServiceRate = field(default_factory=ServiceRate)

    def decide(self, ahead: int, in_flight: int) -> Decision:
        """Shed a new message with `ahead` messages queued before it while `in_flight` are being answered?"""
        wait = self.rate.expected_wait(ahead, in_flight)
        if wait is None:
            return Decision(False, None)
        return Decision(bool(self.max_expected_wait_s) and wait > self.max_expected_wait_s, wait)
