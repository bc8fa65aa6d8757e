"""One retry policy: every outgoing call (DingTalk OpenAPI, session webhooks, the model) and the Stream reconnect.

Written here rather than taken from tenacity or backoff: the rules fit in a page (typed errors that say whether
they are retryable and carry the server's Retry-After, jittered exponential delays, a reconnect backoff that
resets after a stable connection), and a library would still need a custom callback for each of them while
adding a package to the offline wheelhouse.

An error takes part through two optional attributes: ``retryable`` (bool) and ``retry_after`` (seconds the
server asked for, or None). Calls that draw on the app-wide card budget take their token inside the call, so
every attempt, retries included, is counted against it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ..settings import ConnectorSettings

log = logging.getLogger("connector.retry")

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[object]]


def is_retryable(error: BaseException) -> bool:
    """The default test: the error says so itself."""
    return bool(getattr(error, "retryable", False))


def parse_retry_after(value: str | None) -> float | None:
    """An HTTP Retry-After header (seconds or an HTTP date) -> seconds from now; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` in all (3: one try and two retries). Retry n waits ``base_delay_s * factor ** (n - 1)``,
    spread by +-``jitter`` (a fraction), or the server's Retry-After; never more than ``max_delay_s``."""

    attempts: int
    factor: float
    base_delay_s: float
    max_delay_s: float
    jitter: float
    sleep: Sleep = field(default=asyncio.sleep, repr=False, compare=False)  # the seam for tests
    uniform: Callable[[float, float], float] = field(default=random.uniform, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.factor < 1 or self.base_delay_s < 0 or self.max_delay_s < 0 \
                or not 0 <= self.jitter < 1:
            raise ValueError(f"invalid retry policy {self!r}")

    @classmethod
    def from_settings(cls, settings: ConnectorSettings) -> RetryPolicy:
        """DingTalk OpenAPI, session webhook and model calls."""
        return cls(attempts=settings.retry_attempts, factor=settings.retry_backoff_factor,
                   base_delay_s=settings.retry_base_delay_s, max_delay_s=settings.retry_max_delay_s, jitter=0.2)

    @classmethod
    def reconnect(cls, settings: ConnectorSettings) -> RetryPolicy:
        """The Stream reconnect: 0.5-1 s, 1-2 s, 2-4 s ... up to reconnect_max_backoff_s (drawn from its upper half).

        ``attempts`` does not apply: the loop never gives up; it iterates ``backoff()``."""
        return cls(attempts=1, factor=2.0, base_delay_s=0.75, max_delay_s=settings.reconnect_max_backoff_s,
                   jitter=1 / 3)

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1: the first retry), jitter included."""
        ceiling = self.max_delay_s / (1 + self.jitter)  # so that jitter never takes a delay past max_delay_s
        try:
            nominal = min(ceiling, self.base_delay_s * self.factor ** (retry - 1))
        except OverflowError:
            nominal = ceiling
        if not self.jitter:
            return nominal
        return min(self.max_delay_s, nominal * self.uniform(1 - self.jitter, 1 + self.jitter))

    def wait_after(self, retry: int, error: BaseException) -> float:
        """The server's Retry-After when the error carries one (capped at max_delay_s), else ``delay(retry)``."""
        asked = getattr(error, "retry_after", None)
        if asked is not None:
            return min(self.max_delay_s, max(0.0, float(asked)))
        return self.delay(retry)

    async def run(self, call: Callable[[], Awaitable[T]], *,
                  retryable: Callable[[BaseException], bool] = is_retryable) -> T:
        """``await call()`` until it returns, raises an error that is not retryable, or the attempts are spent;
        the last error is raised as it is."""
        retry = 0
        while True:
            try:
                return await call()
            except Exception as error:
                retry += 1
                if retry >= self.attempts or not retryable(error):
                    raise
                wait = self.wait_after(retry, error)
                log.debug("attempt %d of %d failed (%s); retrying in %.2f s", retry, self.attempts,
                          type(error).__name__, wait)
            await self.sleep(wait)

    def backoff(self) -> Backoff:
        return Backoff(self)


class Backoff(Iterator[float]):
    """The waits of a loop that never gives up (the Stream reconnect): one longer per failure, up to
    ``max_delay_s``; ``reset()`` after a stable connection starts again from the first."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0

    def __next__(self) -> float:
        self.failures += 1
        return self.policy.delay(self.failures)

    def reset(self) -> None:
        self.failures = 0
