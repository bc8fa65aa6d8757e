"""Intake: what the transport calls right after the ACK, before the dispatcher.

It counts the message, then: a busy notice when the expected wait is too long (shedding, core/capacity.py) or the
backlog is full; otherwise the message is queued, and if it has to wait its asker sees the card with the queue
position at once, refreshed while it waits (the sink's acknowledgement, core/sink.py). Where the platform cannot
show that (no card permission), nothing extra is sent unless the expected wait is long: then one short notice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .core.capacity import Shedding
from .core.dispatcher import Dispatcher
from .core.messages import BUSY, QUEUED_LONG, RESTARTING, SHED, duration
from .core.sink import QueuedReply, ReplySink
from .metrics import ConnectorMetrics
from .types import IncomingMessage

log = logging.getLogger("connector")

Notify = Callable[[IncomingMessage, str], Awaitable[None]]


def wait_in_words(seconds: float) -> str:
    """An expected wait as the busy notice says it: whole minutes from two minutes on, else tens of seconds."""
    whole = int(-(-seconds // 60) * 60) if seconds >= 120 else max(10, int(-(-seconds // 10) * 10))
    return duration(whole)  # type: ignore[return-value]


class Intake:
    """What the transport calls right after the ACK: count the message and queue it, or tell the sender the
    connector is busy (or restarting, once a stop was asked for). A refused message never reaches the pipeline;
    `on_refused(message, reason)` records it (the audit trail).

    With a `sink`, a message that has to wait is acknowledged at once with its queue position, refreshed every
    `refresh_s` while it waits; with `shedding`, a message whose expected wait is too long gets a busy notice
    naming the wait instead (reason "shed"). Where the sink cannot acknowledge (no card permission), a message
    whose expected wait is over `notice_after_s` (0: never) gets one text notice with its position and the wait.
    `seen(message)` tells redeliveries of answered messages apart: they get none of these (the pipeline's dedup
    drops them); `sighted(message)` records a shed or refused (backlog full) message as answered by its busy
    notice, so its redeliveries get nothing more either."""

    def __init__(self, dispatcher: Dispatcher, metrics: ConnectorMetrics, notify: Notify,
                 on_refused: Callable[[IncomingMessage, str], None] | None = None, *,
                 sink: ReplySink | None = None, shedding: Shedding | None = None,
                 seen: Callable[[IncomingMessage], Awaitable[bool]] | None = None, refresh_s: float = 2.0,
                 notice_after_s: float = 0.0,
                 sighted: Callable[[IncomingMessage], Awaitable[bool]] | None = None) -> None:
        self.dispatcher, self.metrics, self.notify = dispatcher, metrics, notify
        self.on_refused = on_refused
        self.sink, self.shedding, self.seen, self.refresh_s = sink, shedding, seen, refresh_s
        self.notice_after_s = notice_after_s
        self.sighted = sighted  # marks the message as answered; False when it was already (the dedup store)
        self.stopping = asyncio.Event()
        self._background: set[asyncio.Task] = set()
        self._queued: dict[int, tuple[IncomingMessage, QueuedReply]] = {}  # acknowledged, not yet started
        self._refresher: asyncio.Task | None = None

    def on_message(self, message: IncomingMessage) -> None:
        self.metrics.received.labels(message.msgtype).inc()
        log.debug("received %s (%s) in %s from %s: %s", message.message_id, message.msgtype,
                  message.conversation_id, message.sender_id, message.text[:200])  # personal data masked (pii)
        fresh = (self.sink is not None or self.shedding is not None) and \
            not self.dispatcher.pending(message.message_id)  # a redelivery of a waiting message adds nothing
        if fresh and self.shedding is not None and not self.stopping.is_set() and \
                self.shedding.rate.per_second() is not None:
            decision = self.shedding.decide(self.dispatcher.ahead_of_new(message), self.dispatcher.in_flight)
            if decision.shed and decision.expected_wait_s is not None:
                self._spawn(self._shed(message, decision.expected_wait_s))
                return
        if not self.dispatcher.submit(message):
            if self.stopping.is_set():  # not recorded: its redelivery after the restart is answered
                self._refuse(message, "restarting")
            else:
                self._spawn(self._refuse_once(message, "busy"))
        elif fresh and self.sink is not None and self.dispatcher.ahead(message) is not None:
            self._spawn(self._acknowledge(message))

    def _refuse(self, message: IncomingMessage, reason: str, notice: str | None = None) -> None:
        if reason != "shed":
            self.metrics.refused.inc()
        if self.on_refused is not None:
            try:
                self.on_refused(message, reason)
            except Exception:  # the notice still goes out
                log.exception("refused message %s not recorded", message.message_id)
        self._spawn(self.notify(message, notice or (RESTARTING() if reason == "restarting" else BUSY())))

    async def _already_answered(self, message: IncomingMessage, *, record: bool = False) -> bool:
        """Was this message answered before? With `record` (and `sighted`), it counts as answered from now on."""
        check = self.sighted if record and self.sighted is not None else self.seen
        if check is None:
            return False
        try:
            answered = await check(message)
        except Exception:  # the dedup store is down: treat it as new (as the pipeline's dedup does)
            log.exception("could not tell whether %s was answered before", message.message_id)
            return False
        return not answered if check is self.sighted else answered

    async def _refuse_once(self, message: IncomingMessage, reason: str, notice: str | None = None) -> bool:
        """A busy notice (shed, or the backlog full) is the message's answer: remembered (sighted), so a redelivery
        of it, refused again or accepted later, gets nothing more (counted as a duplicate); without `sighted` only
        answered messages are told apart (seen). False when it was such a redelivery."""
        if await self._already_answered(message, record=True):
            self.metrics.duplicates.inc()
            return False
        self._refuse(message, reason, notice)
        return True

    async def _shed(self, message: IncomingMessage, wait_s: float) -> None:
        if await self._refuse_once(message, "shed", SHED(wait=wait_in_words(wait_s))):
            self.metrics.shed.inc()
            log.info("shed %s: expected wait %.0f s > %.0f s", message.message_id, wait_s,
                     self.shedding.max_expected_wait_s if self.shedding else 0)

    async def _acknowledge(self, message: IncomingMessage) -> None:
        if await self._already_answered(message) or self.sink is None:
            return
        ahead = self.dispatcher.ahead(message)
        if ahead is None:  # started meanwhile: its card comes with the answer
            return
        reply = self.sink.acknowledge(message, ahead)
        if reply is None:
            await self._notice_long_wait(message, ahead)
            return
        self._queued[id(message)] = (message, reply)
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh())

    async def _notice_long_wait(self, message: IncomingMessage, ahead: int) -> None:
        """No card to show the position: one text notice, only when the expected wait is long."""
        wait = self.dispatcher.rate.expected_wait(ahead, self.dispatcher.in_flight) if self.notice_after_s else None
        if wait is not None and wait > self.notice_after_s:
            self.metrics.queue_notices.inc()
            await self.notify(message, QUEUED_LONG(ahead=ahead, wait=wait_in_words(wait)))

    async def _refresh(self) -> None:
        """The waiting messages' positions, nearest first, as often as refresh_s and the sink's budget allow."""
        while self._queued:
            await asyncio.sleep(self.refresh_s)
            positions = self.dispatcher.positions()
            for key, (message, reply) in sorted(self._queued.items(), key=lambda kv: positions.get(kv[0], -1)):
                ahead = positions.get(key)
                if ahead is None:
                    self._queued.pop(key, None)
                else:
                    reply.show_position(ahead)

    def on_done(self, message: IncomingMessage) -> None:
        """The dispatcher finished a message: forget its acknowledgement (closed if nothing used it)."""
        self._queued.pop(id(message), None)
        if self.sink is not None:
            self.sink.release(message)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def settle(self) -> None:
        """Wait for the notices still being sent."""
        if self._refresher is not None:
            self._refresher.cancel()
        await asyncio.gather(*self._background, *([self._refresher] if self._refresher else []),
                             return_exceptions=True)
