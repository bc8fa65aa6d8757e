"""Conversation context and dedup markers: Redis when configured, in-process otherwise.

With Redis configured but down, calls fail fast (short socket timeouts): the
context store answers "no history" and the dedup store falls back to memory, so
the bot still answers; the outage is logged once and counted, and Redis is used
again as soon as it answers.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from ..types import Turn

log = logging.getLogger("connector.store")


class ContextStore(Protocol):
    async def load(self, key: str) -> list[Turn]: ...
    async def append(self, key: str, turns: list[Turn]) -> None: ...
    async def clear(self, key: str) -> None: ...


class DedupStore(Protocol):
    async def first_sighting(self, key: str) -> bool:
        """True once per key (within the TTL); False for every later sighting."""

    async def seen(self, key: str) -> bool:
        """Was the key sighted already (within the TTL)? Only looks: a later first_sighting still counts."""


def kept_turns(length: int, max_turns: int, added: int) -> int:
    """How many of a context's newest turns to keep once `added` were appended and it holds `length`: all up to
    `max_turns`; past it, the newest half (whole exchanges, at least what was just added). Dropping half at once
    instead of the oldest exchange each time keeps the history's beginning the same for max_turns / 4 exchanges,
    so the inference server's prefix cache can reuse the conversation's prompt (a sliding window changes its
    start every turn, and every prompt is prefilled whole)."""
    if length <= max_turns:
        return length
    return min(max_turns, max(max_turns // 4 * 2, added, 2))


class MemoryContextStore:
    def __init__(self, ttl_s: float, max_turns: int, max_keys: int = 10_000) -> None:
        self.ttl_s, self.max_turns, self.max_keys = ttl_s, max_turns, max_keys
        self._data: OrderedDict[str, tuple[float, list[Turn]]] = OrderedDict()

    async def load(self, key: str) -> list[Turn]:
        entry = self._data.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._data.pop(key, None)
            return []
        return list(entry[1])

    async def append(self, key: str, turns: list[Turn]) -> None:
        history = (await self.load(key)) + turns
        self._data[key] = (time.monotonic() + self.ttl_s, history[-kept_turns(len(history), self.max_turns,
                                                                              len(turns)):])
        self._data.move_to_end(key)
        while len(self._data) > self.max_keys:
            self._data.popitem(last=False)

    async def clear(self, key: str) -> None:
        self._data.pop(key, None)


class MemoryDedupStore:
    def __init__(self, ttl_s: float, max_keys: int = 100_000) -> None:
        self.ttl_s, self.max_keys = ttl_s, max_keys
        self._seen: OrderedDict[str, float] = OrderedDict()

    async def first_sighting(self, key: str) -> bool:
        now = time.monotonic()
        expiry = self._seen.get(key)
        if expiry is not None and expiry > now:
            return False
        self._seen[key] = now + self.ttl_s
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return True

    async def seen(self, key: str) -> bool:
        expiry = self._seen.get(key)
        return expiry is not None and expiry > time.monotonic()


class RedisStores:
    """Both stores on one Redis client, with graceful degradation while Redis is down."""

    def __init__(self, url: str, *, ttl_s: int, max_turns: int, dedup_ttl_s: int,
                 on_error: Callable[[str], None] | None = None, prefix: str = "appliance",
                 ca_bundle: str | None = None) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        tls = {"ssl_ca_certs": ca_bundle} if ca_bundle and url.startswith("rediss://") else {}
        # one immediate retry (a reset connection), not redis-py 8's default of three with backoff: while Redis
        # is down each call would cost seconds, and a message makes several (context, dedup, quota)
        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5,
                                           health_check_interval=10, decode_responses=True,
                                           retry=Retry(NoBackoff(), 1), **tls)
        self.ttl_s, self.max_turns, self.dedup_ttl_s, self.prefix = ttl_s, max_turns, dedup_ttl_s, prefix
        self._fallback_dedup = MemoryDedupStore(dedup_ttl_s)
        self._on_error = on_error or (lambda kind: None)
        self.up = True

    def _down(self, what: str, exc: Exception) -> None:
        if self.up:
            log.warning("Redis unavailable (%s: %s); answering without history until it returns", what,
                        type(exc).__name__)
        self.up = False
        self._on_error("redis")

    def _back(self) -> None:
        if not self.up:
            log.info("Redis is back")
        self.up = True

    async def ping(self) -> bool:
        try:
            await self._redis.ping()
            self._back()
            return True
        except Exception as exc:
            self._down("ping", exc)
            return False

    async def load(self, key: str) -> list[Turn]:
        try:
            raw = await self._redis.lrange(f"{self.prefix}:ctx:{key}", 0, -1)
        except Exception as exc:
            self._down("load", exc)
            return []
        self._back()
        turns = []
        for item in raw:
            try:
                data = json.loads(item)
                turns.append(Turn(data["role"], data["content"]))
            except (ValueError, KeyError, TypeError):
                continue
        return turns

    async def append(self, key: str, turns: list[Turn]) -> None:
        name = f"{self.prefix}:ctx:{key}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(name, *[json.dumps({"role": t.role, "content": t.content}, ensure_ascii=False)
                                   for t in turns])
                pipe.expire(name, self.ttl_s)
                length, _ = await pipe.execute()
            keep = kept_turns(length, self.max_turns, len(turns))
            if keep < length:  # one writer per context (the dispatcher orders them): no race with the push
                await self._redis.ltrim(name, -keep, -1)
        except Exception as exc:
            self._down("append", exc)
            return
        self._back()

    async def clear(self, key: str) -> None:
        try:
            await self._redis.delete(f"{self.prefix}:ctx:{key}")
        except Exception as exc:
            self._down("clear", exc)
            return
        self._back()

    async def first_sighting(self, key: str) -> bool:
        try:
            first = await self._redis.set(f"{self.prefix}:dedup:{key}", "1", nx=True, ex=self.dedup_ttl_s)
        except Exception as exc:
            self._down("dedup", exc)
            return await self._fallback_dedup.first_sighting(key)
        self._back()
        await self._fallback_dedup.first_sighting(key)  # remembered locally too, for an outage later
        return bool(first)

    async def seen(self, key: str) -> bool:
        try:
            found = await self._redis.exists(f"{self.prefix}:dedup:{key}")
        except Exception as exc:
            self._down("dedup", exc)
            return await self._fallback_dedup.seen(key)
        self._back()
        return bool(found)

    @property
    def client(self) -> Any:
        """The Redis client (the quota counters share it; closed by `close`)."""
        return self._redis

    async def close(self) -> None:
        await self._redis.aclose()
