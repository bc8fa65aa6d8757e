"""Draining on SIGTERM, in one object: the signal handler starts it, serving asks it.

Once started, new requests are refused with 503 (a load balancer retries them elsewhere), running
streams go on until the deadline (`drain_timeout_s`) and are then ended with an error chunk and
`data: [DONE]`; uvicorn's graceful shutdown waits a little longer than that before it closes the
connections that are left.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import EngineFailure, NotReady

SHUTDOWN_MARGIN_S = 5  # uvicorn waits this much beyond the drain deadline


class Drain:
    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        self.deadline: float | None = None  # clock time by which running streams must end

    def start(self) -> None:
        """SIGTERM (idempotent: a second signal does not move the deadline)."""
        if self.deadline is None:
            self.deadline = self._clock() + self.timeout_s

    @property
    def draining(self) -> bool:
        return self.deadline is not None

    @property
    def graceful_shutdown_s(self) -> int:
        """What uvicorn's timeout_graceful_shutdown should be: the drain, then a margin."""
        return int(self.timeout_s) + SHUTDOWN_MARGIN_S

    def refuse_new(self) -> None:
        """A new request while draining: 503."""
        if self.draining:
            raise NotReady("The server is shutting down; retry on another instance or in a moment.")

    def check_deadline(self) -> None:
        """Between the deltas of a running generation: past the deadline it ends."""
        if self.deadline is not None and self._clock() > self.deadline:
            raise EngineFailure("The server is shutting down; the generation was stopped.")
