"""The context stores' history limit: past `max_turns` the oldest half goes at once (the prompt's beginning stays
the same between turns for the inference server's prefix cache), in memory and in a real Redis."""

from __future__ import annotations

import uuid

from connector.core.store import MemoryContextStore, RedisStores, kept_turns
from connector.types import Turn


def test_kept_turns() -> None:
    assert kept_turns(40, 40, 2) == 40  # up to the limit: everything
    assert kept_turns(42, 40, 2) == 20  # past it: the newest half, whole exchanges
    assert kept_turns(44, 42, 2) == 20
    assert kept_turns(3, 2, 2) == 2 and kept_turns(9, 4, 6) == 4  # at least what was just added, at most the limit


def _exchange(i: int) -> list[Turn]:
    return [Turn("user", f"q{i}"), Turn("assistant", f"a{i}")]


async def _history_after(store, key: str, exchanges: int) -> list[list[str]]:
    seen = []
    for i in range(exchanges):
        await store.append(key, _exchange(i))
        seen.append([t.content for t in await store.load(key)])
    return seen


async def test_memory_store_drops_the_oldest_half_at_once() -> None:
    seen = await _history_after(MemoryContextStore(ttl_s=60, max_turns=8), "k", 7)
    assert [len(h) for h in seen] == [2, 4, 6, 8, 4, 6, 8]
    assert seen[4] == ["q3", "a3", "q4", "a4"] and seen[6][0] == "q3"  # the same first turn for a while


async def test_redis_store_drops_the_oldest_half_at_once(redis_server) -> None:
    store = RedisStores(redis_server.url, ttl_s=60, max_turns=8, dedup_ttl_s=60)
    key = f"test:{uuid.uuid4().hex}"
    try:
        seen = await _history_after(store, key, 7)
    finally:
        await store.close()
    assert [len(h) for h in seen] == [2, 4, 6, 8, 4, 6, 8]
    assert seen[4] == ["q3", "a3", "q4", "a4"]
    assert 0 < redis_server.client().ttl(f"appliance:ctx:{key}") <= 60
