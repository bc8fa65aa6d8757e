"""The identity middleware and the directory cache: departments on the trail, TTL, failures that never fail a
message."""

from __future__ import annotations

import asyncio
import logging

import pytest

from connector.core.identity import DirectoryCache, identity
from connector.core.trail import current, opened
from connector.types import IncomingMessage


class FakeDirectory:
    """The seam: departments by user, a call count, and an error to raise when set."""

    def __init__(self, table: dict[str, tuple[str, ...]]) -> None:
        self.table, self.calls, self.error = table, 0, None
        self.delay = 0.0

    async def departments(self, user_id: str) -> tuple[str, ...]:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.table.get(user_id, ())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def message(sender: str = "ann") -> IncomingMessage:
    return IncomingMessage(platform="test", message_id="m1", delivery_id="d1", conversation_id="c",
                           conversation_kind="dm", sender_id=sender, sender_name=sender, text="hi", msgtype="text")


async def test_departments_are_cached_for_the_ttl() -> None:
    directory, clock = FakeDirectory({"ann": ("10", "20")}), Clock()
    cache = DirectoryCache(directory, ttl_s=60, clock=clock)
    assert await cache.departments("ann") == ("10", "20")
    clock.now += 59
    assert await cache.departments("ann") == ("10", "20") and directory.calls == 1
    directory.table["ann"] = ("30",)  # moved to another department
    clock.now += 2
    assert await cache.departments("ann") == ("30",) and directory.calls == 2


async def test_ttl_zero_asks_every_time_and_concurrent_lookups_share_one_call() -> None:
    directory = FakeDirectory({"ann": ("10",)})
    cache = DirectoryCache(directory, ttl_s=0)
    await cache.departments("ann")
    await cache.departments("ann")
    assert directory.calls == 2
    directory.delay = 0.05
    results = await asyncio.gather(*(cache.departments("ann") for _ in range(5)))
    assert results == [("10",)] * 5 and directory.calls == 3


async def test_a_failure_is_remembered_briefly_then_asked_again() -> None:
    directory, clock = FakeDirectory({"ann": ("10",)}), Clock()
    directory.error = RuntimeError("directory down")
    cache = DirectoryCache(directory, ttl_s=3600, failure_ttl_s=60, clock=clock)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            await cache.departments("ann")
    assert directory.calls == 1  # not one call per message while it is down
    directory.error = None
    clock.now += 61
    assert await cache.departments("ann") == ("10",) and directory.calls == 2


async def test_the_cache_keeps_at_most_max_users() -> None:
    directory = FakeDirectory({})
    cache = DirectoryCache(directory, ttl_s=60, max_users=2)
    for user in ("a", "b", "c"):
        await cache.departments(user)
    await cache.departments("a")  # the oldest was dropped
    assert directory.calls == 4


async def test_the_middleware_puts_the_departments_on_the_trail() -> None:
    seen = []

    async def call_next() -> None:
        seen.append(current().departments)

    middleware = identity(DirectoryCache(FakeDirectory({"ann": ("10", "20")}), ttl_s=60), on_error=lambda: None)
    with opened(message("ann")) as trail:
        await middleware(message("ann"), call_next)
    assert seen == [("10", "20")] and trail.departments == ("10", "20")
    passed = []

    async def untrailed_next() -> None:
        passed.append(current())

    await middleware(message("ann"), untrailed_next)  # outside a trail: passes the message on
    assert passed == [None]


async def test_a_failed_lookup_counts_logs_and_goes_on_without_departments(caplog) -> None:
    directory = FakeDirectory({})
    directory.error = RuntimeError("403 60011: no permission")
    errors, seen = [], []

    async def call_next() -> None:
        seen.append(current().departments)

    middleware = identity(DirectoryCache(directory, ttl_s=60), on_error=lambda: errors.append(1))
    with caplog.at_level(logging.WARNING, logger="connector.identity"), opened(message("bob")):
        await middleware(message("bob"), call_next)
    assert seen == [()] and errors == [1]
    assert "departments of bob unknown" in caplog.text and "60011" in caplog.text
