"""Dispatcher ordering and concurrency, middleware chain, token bucket."""

from __future__ import annotations

import asyncio
import time

from connector.core.dispatcher import Dispatcher
from connector.core.middleware import chain, dedup, message_policy, rate_limit
from connector.core.ratelimit import SlidingWindowLimiter, TokenBucket
from connector.core.store import MemoryContextStore, MemoryDedupStore
from connector.types import IncomingMessage, Turn


def msg(conv: str, n: int, text: str = "hi", msgtype: str = "text", sender: str = "u1") -> IncomingMessage:
    return IncomingMessage(platform="test", message_id=f"{conv}-{n}", delivery_id=f"d-{conv}-{n}",
                           conversation_id=conv, conversation_kind="dm", sender_id=sender, sender_name=sender,
                           text=text, msgtype=msgtype)


async def test_one_at_a_time_per_conversation_concurrent_across() -> None:
    log: list[tuple[str, str]] = []
    active: dict[str, int] = {}
    peak = {"overall": 0}

    async def handler(m: IncomingMessage) -> None:
        active[m.conversation_id] = active.get(m.conversation_id, 0) + 1
        assert active[m.conversation_id] == 1, "two messages of one conversation ran at once"
        peak["overall"] = max(peak["overall"], sum(active.values()))
        log.append(("start", m.message_id))
        await asyncio.sleep(0.02)
        active[m.conversation_id] -= 1

    d = Dispatcher(handler, max_in_flight=8, max_backlog=100)
    for n in range(5):
        for conv in ("a", "b", "c"):
            assert d.submit(msg(conv, n))
    assert (d.backlog, d.in_flight) == (12, 3)  # the first of each started at once
    assert await d.drain(5)
    for conv in ("a", "b", "c"):
        assert [i for k, i in log if i.startswith(conv)] == [f"{conv}-{n}" for n in range(5)]
    assert peak["overall"] == 3  # the three conversations ran concurrently
    assert d.backlog == 0 and d.in_flight == 0


async def test_in_flight_bound_and_backlog_limit() -> None:
    running = {"now": 0, "peak": 0}

    async def handler(m: IncomingMessage) -> None:
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
        await asyncio.sleep(0.02)
        running["now"] -= 1

    d = Dispatcher(handler, max_in_flight=2, max_backlog=5)
    accepted = [d.submit(msg(f"c{i}", 0)) for i in range(8)]
    assert accepted == [True] * 7 + [False]  # 2 answered at once, 5 queued, the last refused
    await d.drain(5)
    assert running["peak"] == 2
    d.stop_accepting()
    assert not d.submit(msg("late", 0))


async def test_dedup_and_policies() -> None:
    handled: list[str] = []
    notices: list[str] = []

    async def handler(m: IncomingMessage) -> None:
        handled.append(m.message_id)

    async def notify(m: IncomingMessage, text: str) -> None:
        notices.append(text)

    dupes: list[str] = []
    run = chain([dedup(MemoryDedupStore(60), lambda m: dupes.append(m.message_id)),
                 rate_limit(SlidingWindowLimiter(3, 60), notify, lambda: None),
                 message_policy(10, notify)], handler)
    await run(msg("a", 1))
    await run(msg("a", 1))  # a redelivery
    await run(msg("a", 2, msgtype="picture"))
    await run(msg("a", 3, text="x" * 11))
    await run(msg("a", 4))  # fourth message of this user in the window
    assert handled == ["a-1"] and dupes == ["a-1"]
    assert "图片" in notices[0] and "too long" in notices[1] and "too fast" in notices[2]


async def test_token_bucket_holds_the_rate() -> None:
    bucket = TokenBucket(rate=20, capacity=2)
    started = time.monotonic()
    for _ in range(12):
        await bucket.acquire()
    assert time.monotonic() - started >= (12 - 2) / 20 * 0.9


async def test_urgent_callers_go_before_waiting_normal_ones_fifo_within_each() -> None:
    """A card's creation (urgent) waits for the next token, not behind every queued streaming update."""
    bucket = TokenBucket(rate=50, capacity=1)
    await bucket.acquire()  # the bank is empty now
    order: list[str] = []

    async def take(name: str, urgent: bool = False) -> None:
        await bucket.acquire(urgent)
        order.append(name)

    tasks = [asyncio.create_task(take(f"update{i}")) for i in range(4)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(take("create1", urgent=True)), asyncio.create_task(take("create2", urgent=True))]
    cancelled = asyncio.create_task(take("gone"))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(*tasks)
    assert order == ["create1", "create2", "update0", "update1", "update2", "update3"]
    started = time.monotonic()
    for _ in range(5):
        await bucket.acquire(urgent=True)
    assert time.monotonic() - started >= 4 / 50 * 0.9  # urgent or not, the rate holds


async def test_a_refusal_halves_the_rate_which_then_recovers(monkeypatch) -> None:
    """AIMD: the server's refusal halves the rate (never below a tenth) and empties the bank; each clean second
    gives back a tenth of the configured rate."""
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    bucket = TokenBucket(rate=20, capacity=4)
    bucket.slow_down()
    assert bucket.rate == 10 and not bucket.try_acquire()  # the bank is empty: wait for the window
    for _ in range(5):
        bucket.slow_down()
    assert bucket.rate == 2  # the floor: a tenth of the configured rate
    clock[0] += 2.0  # two clean seconds: +2 tokens per second each
    assert bucket.try_acquire() and bucket.rate == 6
    clock[0] += 60.0
    bucket.try_acquire()
    assert bucket.rate == bucket.configured_rate == 20  # never above the configured budget


async def test_memory_context_store_ttl_and_trim() -> None:
    store = MemoryContextStore(ttl_s=0.1, max_turns=4)
    await store.append("k", [Turn("user", str(i)) for i in range(6)])
    assert [t.content for t in await store.load("k")] == ["2", "3", "4", "5"]
    await asyncio.sleep(0.15)
    assert await store.load("k") == []
