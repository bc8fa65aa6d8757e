"""Dispatcher: messages that share a context in order, one at a time; everything else concurrently and fairly.

The ordering key is the context key (``ChatHandler.context_key``: a direct chat, a group, or one sender in a group
with per-sender context), so two people asking in one group are answered side by side while one person's
questions keep their order. When every slot (`max_in_flight`) is busy, waiting work is started by round-robin in
two levels: across conversations first, then across the context keys within a conversation, so a busy group gets
one turn per round like any direct chat and cannot starve it. `ahead(message)` estimates how many messages will
start before a queued one (the position its asker is shown).

The backlog (accepted, not yet started) is a gauge, and beyond `max_backlog` new messages are refused so that
memory stays bounded (the caller answers politely). `rate` measures the service rate (core/capacity.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from ..types import IncomingMessage
from .capacity import ServiceRate

log = logging.getLogger("connector.dispatcher")

Handler = Callable[[IncomingMessage], Awaitable[None]]


class _Conversation:
    """One conversation's waiting work: per context key a FIFO queue; the keys ready to start, in turn order."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[IncomingMessage]] = {}
        self.ready: deque[str] = deque()


class Dispatcher:
    def __init__(self, handler: Handler, *, max_in_flight: int, max_backlog: int,
                 key: Callable[[IncomingMessage], str] = lambda m: m.conversation_id,
                 on_done: Callable[[IncomingMessage], None] | None = None,
                 rate: ServiceRate | None = None) -> None:
        self._handler = handler
        self._key = key
        self.max_in_flight = max_in_flight
        self.max_backlog = max_backlog
        self.on_done = on_done
        self.rate = rate or ServiceRate()
        self._conversations: dict[str, _Conversation] = {}
        self._ring: deque[str] = deque()  # conversations with a ready key, in turn order
        self._running: set[str] = set()  # context keys with a message being answered
        self._tasks: set[asyncio.Task] = set()
        self._pending_ids: dict[str, int] = {}  # message ids queued or being answered (redeliveries included)
        self.backlog = 0
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = True

    # -- submitting and starting -------------------------------------------------------------------------------

    def submit(self, message: IncomingMessage) -> bool:
        """Queue a message behind its context's earlier ones. False: refused (full or stopping)."""
        if not self._accepting or self.backlog >= self.max_backlog:
            return False
        key, conv_id = self._key(message), message.conversation_id
        conv = self._conversations.get(conv_id)
        if conv is None:
            conv = self._conversations[conv_id] = _Conversation()
        queue = conv.queues.get(key)
        if queue is None:
            queue = conv.queues[key] = deque()
        queue.append(message)
        self.backlog += 1
        self._pending_ids[message.message_id] = self._pending_ids.get(message.message_id, 0) + 1
        self._idle.clear()
        if len(queue) == 1 and key not in self._running:
            self._make_ready(conv_id, conv, key)
        self._pump()
        return True

    def _make_ready(self, conv_id: str, conv: _Conversation, key: str) -> None:
        conv.ready.append(key)
        if len(conv.ready) == 1:
            self._ring.append(conv_id)

    def _pump(self) -> None:
        while self.in_flight < self.max_in_flight and self._ring:
            conv_id = self._ring.popleft()
            conv = self._conversations[conv_id]
            key = conv.ready.popleft()
            if conv.ready:
                self._ring.append(conv_id)
            message = conv.queues[key].popleft()
            self.backlog -= 1
            self.in_flight += 1
            self._running.add(key)
            self.rate.started()
            task = asyncio.create_task(self._run(conv_id, key, message), name=f"context:{key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, conv_id: str, key: str, message: IncomingMessage) -> None:
        try:
            await self._handler(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler failed for message %s", message.message_id)
        finally:
            self.in_flight -= 1
            self.rate.finished()
            self._running.discard(key)
            left = self._pending_ids.get(message.message_id, 1) - 1
            if left:
                self._pending_ids[message.message_id] = left
            else:
                self._pending_ids.pop(message.message_id, None)
            conv = self._conversations.get(conv_id)
            if conv is not None:
                if conv.queues.get(key):
                    self._make_ready(conv_id, conv, key)
                elif key in conv.queues:
                    del conv.queues[key]
                if not conv.queues:
                    del self._conversations[conv_id]
            if self.on_done is not None:
                try:
                    self.on_done(message)
                except Exception:
                    log.exception("after-message callback failed for %s", message.message_id)
            self._pump()
            if self.in_flight == 0 and self.backlog == 0:
                self._idle.set()

    # -- what the asker is told ---------------------------------------------------------------------------------

    def pending(self, message_id: str) -> bool:
        """A message with this id is queued or being answered (a redelivery of it adds nothing)."""
        return message_id in self._pending_ids

    def schedule(self, extra: IncomingMessage | None = None) -> list[IncomingMessage]:
        """The queued messages (and `extra`, one not yet submitted) in the order they are expected to start: an
        estimate, in which a context whose message is being answered takes its next turn after the keys already
        waiting in its conversation."""
        order: list[IncomingMessage] = []
        keys: dict[str, deque[str]] = {}
        queues: dict[str, deque[IncomingMessage]] = {}
        ring: deque[str] = deque(self._ring)
        for conv_id, conv in self._conversations.items():
            waiting = [k for k in conv.queues if k not in conv.ready and conv.queues[k]]
            keys[conv_id] = deque([*conv.ready, *waiting])
            queues.update((k, deque(q)) for k, q in conv.queues.items())
            if conv_id not in ring and keys[conv_id]:
                ring.append(conv_id)
        if extra is not None:
            key, conv_id = self._key(extra), extra.conversation_id
            queue = queues.setdefault(key, deque())
            queue.append(extra)
            conv_keys = keys.setdefault(conv_id, deque())
            if len(queue) == 1:
                conv_keys.append(key)
            if conv_id not in ring:
                ring.append(conv_id)
        while ring:
            conv_id = ring.popleft()
            key = keys[conv_id].popleft()
            order.append(queues[key].popleft())
            if queues[key]:
                keys[conv_id].append(key)
            if keys[conv_id]:
                ring.append(conv_id)
        return order

    def positions(self) -> dict[int, int]:
        """id(message) -> how many queued messages are expected to start before it."""
        return {id(m): n for n, m in enumerate(self.schedule())}

    def ahead(self, message: IncomingMessage) -> int | None:
        """Queued messages expected to start before this one; None once it has started (or is unknown)."""
        return self.positions().get(id(message))

    def ahead_of_new(self, message: IncomingMessage) -> int:
        """Where a message not yet submitted would stand (the shedding rule asks before queueing it)."""
        if self.in_flight < self.max_in_flight and not self.backlog:
            return 0
        return next(n for n, m in enumerate(self.schedule(message)) if m is message)

    # -- stopping -------------------------------------------------------------------------------------------------

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
        self._ring.clear()
        self._conversations.clear()
        self.backlog = 0
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._idle.set()
