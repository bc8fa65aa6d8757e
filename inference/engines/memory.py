"""Freed memory given back to the operating system when the engine goes idle.

What the soak showed (docs/reliability.md "One hour"): the inference server's RSS rose from 1.0 to 2.7 GiB
over 48 minutes at 1 message/s with peaks growing, and one `malloc_trim(0)` called into the running process
from outside took it to 1.6 GiB at once: freed memory that glibc's malloc kept, not live objects. The batch's
tensors change shape every step (rows join and leave, the cache grows), and glibc raises its mmap threshold
after large frees, so later tensors of those sizes come from the heap, where free pages stay in the process
unless trimmed. `malloc_trim(0)` (glibc 2.8+) releases free pages anywhere in the heaps (madvise), in a few
milliseconds.

Why our own: it is one libc call; no maintained Python library wraps it (psutil and the allocators' own
packages do not), and swapping the allocator (jemalloc, tcmalloc via LD_PRELOAD) is a deployment choice
this appliance cannot rely on being present on a customer's box.

`IdleTrim` trims when the engine has been busy since the last trim and goes idle, at most once every
`min_interval_s` seconds (0: never). On a C library other than glibc (musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

log = logging.getLogger("inference.engine")


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class IdleTrim:
    def __init__(self, min_interval_s: float, clock: Callable[[], float] = time.monotonic,
                 trim: Callable[[int], int] | None = None) -> None:
        self.min_interval_s, self._clock = min_interval_s, clock
        self._trim = (trim or _malloc_trim()) if min_interval_s > 0 else None
        self._last = float("-inf")
        self.busy = False  # set by the engine after each step; cleared by a trim
        self.trims = 0

    def idle(self) -> None:
        """The engine has nothing to do: trim if it worked since the last trim and the interval has passed."""
        if self._trim is None or not self.busy:
            return
        now = self._clock()
        if now - self._last < self.min_interval_s:
            return
        self._last, self.busy = now, False
        self._trim(0)
        self.trims += 1
