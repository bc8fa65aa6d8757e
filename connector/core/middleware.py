"""Middlewares between the dispatcher and the handler (bolt-python style: each may stop the chain)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence

from ..types import IncomingMessage
from .messages import (
    EMPTY,
    GROUP_NOT_ALLOWED,
    MEDIA,
    TEXT_ONLY,
    TEXT_ONLY_FILES,
    TOO_FAST,
    TOO_LONG,
    UNSUPPORTED,
    USER_NOT_ALLOWED,
)
from .ratelimit import SlidingWindowLimiter
from .store import DedupStore
from .trail import Trail, opened, refuse

log = logging.getLogger("connector.middleware")

Next = Callable[[], Awaitable[None]]
Middleware = Callable[[IncomingMessage, Next], Awaitable[None]]
Notify = Callable[[IncomingMessage, str], Awaitable[None]]  # a short polite reply


def chain(middlewares: Sequence[Middleware], handler: Callable[[IncomingMessage], Awaitable[None]]
          ) -> Callable[[IncomingMessage], Awaitable[None]]:
    async def run(message: IncomingMessage) -> None:
        async def call(index: int) -> None:
            if index == len(middlewares):
                await handler(message)
            else:
                await middlewares[index](message, lambda: call(index + 1))

        await call(0)

    return run


def dedup_key(message: IncomingMessage) -> str:
    """The key a message is remembered by: data.msgId, stable across redeliveries."""
    return f"msg:{message.platform}:{message.message_id}"


def dedup(store: DedupStore, on_duplicate: Callable[[IncomingMessage], None]) -> Middleware:
    """Exactly one reply per message: data.msgId (stable across redeliveries) and headers.messageId."""

    async def middleware(message: IncomingMessage, call_next: Next) -> None:
        first = await store.first_sighting(dedup_key(message))
        if message.delivery_id and message.delivery_id != message.message_id:
            first = await store.first_sighting(f"delivery:{message.platform}:{message.delivery_id}") and first
        if not first:
            on_duplicate(message)
            log.info("duplicate delivery of %s ignored", message.message_id)
            return
        await call_next()

    return middleware


def trailed(on_done: Sequence[Callable[[Trail], None]]) -> Middleware:
    """Open the message's trail (core/trail.py) for the stages after this one; when they are done, hand the
    finished trail to each of `on_done` (the audit writer, the quota charge). An exception marks it failed."""

    async def middleware(message: IncomingMessage, call_next: Next) -> None:
        try:
            with opened(message) as trail:
                try:
                    await call_next()
                except BaseException as exc:
                    if trail.outcome == "answered":
                        trail.refuse("failed", type(exc).__name__)
                    raise
        finally:
            for done in on_done:
                try:
                    done(trail)
                except Exception:  # a broken consumer must not lose the reply nor the other consumers' turn
                    log.exception("trail consumer failed for %s", message.message_id)

    return middleware


def allowlist(users: Sequence[str], groups: Sequence[str], notify: Notify) -> Middleware:
    allowed_users, allowed_groups = set(users), set(groups)

    async def middleware(message: IncomingMessage, call_next: Next) -> None:
        if allowed_users and message.sender_id not in allowed_users:
            refuse("denied", "user_not_allowed")
            await notify(message, USER_NOT_ALLOWED())
            return
        if message.conversation_kind == "group" and allowed_groups and message.conversation_id not in allowed_groups:
            refuse("denied", "group_not_allowed")
            await notify(message, GROUP_NOT_ALLOWED())
            return
        await call_next()

    return middleware


def rate_limit(limiter: SlidingWindowLimiter, notify: Notify, on_limited: Callable[[], None]) -> Middleware:
    async def middleware(message: IncomingMessage, call_next: Next) -> None:
        if not limiter.allow(message.sender_id):
            on_limited()
            refuse("rate_limited", "too_fast")
            await notify(message, TOO_FAST())
            return
        await call_next()

    return middleware


def message_policy(max_chars: int, notify: Notify, attachments: Collection[str] = ()) -> Middleware:
    """Unsupported message types and over-long messages get a polite answer instead of the model.

    ``attachments``: the kinds of attachment an enabled skill reads ("file": the files skill); those pass on to
    the skills. Pictures and videos are told that the model reads text only."""

    async def middleware(message: IncomingMessage, call_next: Next) -> None:
        if message.attachment is not None and message.attachment.kind in attachments:
            await call_next()
            return
        if message.attachment is not None and message.attachment.kind in ("picture", "video"):
            refuse("refused", "unsupported")
            await notify(message, TEXT_ONLY(kind=MEDIA[message.attachment.kind],
                                            files=TEXT_ONLY_FILES if "file" in attachments else ""))
            return
        if not message.supported:
            refuse("refused", "unsupported")
            await notify(message, UNSUPPORTED(kind=MEDIA.get(message.msgtype, message.msgtype)))
            return
        if not message.text.strip():
            refuse("refused", "empty")
            await notify(message, EMPTY())
            return
        if len(message.text) > max_chars:
            refuse("refused", "too_long")
            await notify(message, TOO_LONG(length=len(message.text), limit=max_chars))
            return
        await call_next()

    return middleware
