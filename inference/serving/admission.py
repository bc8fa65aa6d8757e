"""Admission control: bounded in-flight sequences; beyond them 429 at once."""

from __future__ import annotations

from ..errors import Overloaded


class Slot:
    """Sequences held by one request; release() is idempotent."""

    __slots__ = ("_controller", "_count")

    def __init__(self, controller: AdmissionController, count: int) -> None:
        self._controller, self._count = controller, count

    def release(self) -> None:
        if self._count:
            self._controller._in_flight -= self._count
            self._count = 0


class AdmissionController:
    def __init__(self, max_running: int, max_waiting: int) -> None:
        self.capacity = max_running + max_waiting
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def acquire(self, sequences: int) -> Slot:
        if self._in_flight + sequences > self.capacity:
            raise Overloaded(
                f"The server is at capacity ({self._in_flight} of {self.capacity} sequences in flight); "
                "retry after the Retry-After interval.",
                retry_after=1,
            )
        self._in_flight += sequences
        return Slot(self, sequences)
