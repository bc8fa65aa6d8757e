"""Who is asking: the sender's departments, looked up in the IM's directory, cached, noted on the message's trail.

`Directory` is what an IM adapter implements (DingTalk: connector/dingtalk/directory.py, the contact API's
user-detail call). `DirectoryCache` keeps each user's departments for `ttl_s` seconds (the settings'
directory_ttl_s; 0: ask every time) and a failed lookup for at most `failure_ttl_s`, so a directory that is down
or an app that lacks the permission costs one call per user per minute, not one per message. The `identity`
middleware runs right after `trailed`: it writes the departments into the current trail, where the handler
passes them to the skills (SkillContext.departments: the knowledge base's access rules) and the audit record
keeps them. A lookup that fails never fails the message: the sender then has no departments (so only what is
open to all, or granted to them by name, is readable), the error is counted and logged as a warning.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..types import IncomingMessage
from .trail import current

log = logging.getLogger("connector.identity")

Next = Callable[[], Awaitable[None]]


class Directory(Protocol):
    """An IM's staff directory."""

    async def departments(self, user_id: str) -> tuple[str, ...]:
        """The ids of the departments `user_id` belongs to (empty: none, or not a member). Raises on failure."""
        ...


class DirectoryCache:
    """A `Directory` in front of another, keeping answers for `ttl_s` seconds; concurrent lookups of one user
    share one call."""

    def __init__(self, directory: Directory, ttl_s: float, *, failure_ttl_s: float = 60.0,
                 max_users: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.directory, self.ttl_s, self.clock = directory, ttl_s, clock
        self.failure_ttl_s = min(failure_ttl_s, ttl_s)
        self.max_users = max_users
        self._entries: dict[str, tuple[float, tuple[str, ...] | BaseException]] = {}
        self._pending: dict[str, asyncio.Future[tuple[str, ...]]] = {}

    async def departments(self, user_id: str) -> tuple[str, ...]:
        entry = self._entries.get(user_id)
        if entry is not None and self.clock() < entry[0]:
            if isinstance(entry[1], BaseException):
                raise entry[1]
            return entry[1]
        pending = self._pending.get(user_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[tuple[str, ...]] = asyncio.get_running_loop().create_future()
        self._pending[user_id] = future
        try:
            found = tuple(await self.directory.departments(user_id))
        except Exception as exc:
            self._remember(user_id, exc, self.failure_ttl_s)
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        else:
            self._remember(user_id, found, self.ttl_s)
            future.set_result(found)
            return found
        finally:
            self._pending.pop(user_id, None)

    def _remember(self, user_id: str, value: tuple[str, ...] | BaseException, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        if len(self._entries) >= self.max_users:  # oldest first (dicts keep insertion order)
            self._entries.pop(next(iter(self._entries)))
        self._entries.pop(user_id, None)
        self._entries[user_id] = (self.clock() + ttl_s, value)


def identity(directory: Directory, on_error: Callable[[], None]) -> Callable[[IncomingMessage, Next],
                                                                             Awaitable[None]]:
    """The middleware: the sender's departments on the current trail (empty when the lookup fails)."""

    async def middleware(message: IncomingMessage, call_next: Next) -> None:
        trail = current()
        if trail is not None:
            try:
                trail.departments = tuple(await directory.departments(message.sender_id))
            except Exception as exc:  # never fails the message: no departments, counted, logged
                on_error()
                log.warning("departments of %s unknown (%s): only documents open to all or granted by name are "
                            "readable for this message", message.sender_id, exc)
        await call_next()

    return middleware
