"""Dispatcher: messages of one conversation in order, one at a time; conversations concurrently.

In-flight work is bounded by a semaphore; the backlog (accepted, not yet
started) is a gauge, and beyond `max_backlog` new messages are refused so that
memory stays bounded (the caller answers politely).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..types import IncomingMessage

log = logging.getLogger("connector.dispatcher")

Handler = Callable[[IncomingMessage], Awaitable[None]]


class Dispatcher:
    def __init__(self, handler: Handler, *, max_in_flight: int, max_backlog: int,
                 key: Callable[[IncomingMessage], str] = lambda m: m.conversation_id) -> None:
        self._handler = handler
        self._key = key
        self._slots = asyncio.Semaphore(max_in_flight)
        self.max_backlog = max_backlog
        self._queues: dict[str, asyncio.Queue[IncomingMessage]] = {}
        self._workers: dict[str, asyncio.Task] = {}
        self.backlog = 0
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = True

    def submit(self, message: IncomingMessage) -> bool:
        """Queue a message behind its conversation's earlier ones. False: refused (full or stopping)."""
        if not self._accepting or self.backlog >= self.max_backlog:
            return False
        key = self._key(message)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
        queue.put_nowait(message)
        self.backlog += 1
        self._idle.clear()
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._work(key, queue), name=f"conversation:{key}")
        return True

    async def _work(self, key: str, queue: asyncio.Queue[IncomingMessage]) -> None:
        try:
            while True:
                try:
                    message = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                async with self._slots:
                    self.backlog -= 1
                    self.in_flight += 1
                    try:
                        await self._handler(message)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("handler failed for message %s", message.message_id)
                    finally:
                        self.in_flight -= 1
        finally:
            self._workers.pop(key, None)
            if queue.empty():
                self._queues.pop(key, None)
            if not self._workers:
                self._idle.set()

    def stop_accepting(self) -> None:
        self._accepting = False

    async def drain(self, timeout: float) -> bool:
        """Wait until every accepted message was handled. False: timed out."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def cancel_all(self) -> None:
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
