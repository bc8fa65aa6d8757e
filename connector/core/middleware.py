"""Middlewares between the dispatcher and the handler (bolt-python style: each may stop the chain)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from ..types import IncomingMessage
from .ratelimit import SlidingWindowLimiter
from .store import DedupStore

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


def dedup(store: DedupStore, on_duplicate: Callable[[IncomingMessage], None]) -> Middleware:
    """Exactly one reply per message: data.msgId (stable across redeliveries) and headers.messageId."""

    async def middleware(message: IncomingMessage, call_next: Next) -> None:
        first = await store.first_sighting(f"msg:{message.platform}:{message.message_id}")
        if message.delivery_id and message.delivery_id != message.message_id:
            first = await store.first_sighting(f"delivery:{message.platform}:{message.delivery_id}") and first
        if not first:
            on_duplicate(message)
            log.info("duplicate delivery of %s ignored", message.message_id)
            return
        await call_next()

    return middleware


def allowlist(users: Sequence[str], groups: Sequence[str], notify: Notify) -> Middleware:
    allowed_users, allowed_groups = set(users), set(groups)

    async def middleware(message: IncomingMessage, call_next: Next) -> None:
        if allowed_users and message.sender_id not in allowed_users:
            await notify(message, "抱歉，您暂未开通此助手的使用权限，请联系管理员。\n\n"
                                  "Sorry, this assistant is not enabled for you yet; please contact your administrator.")
            return
        if message.conversation_kind == "group" and allowed_groups and message.conversation_id not in allowed_groups:
            await notify(message, "抱歉，此群暂未开通助手。\n\nSorry, the assistant is not enabled in this group.")
            return
        await call_next()

    return middleware


def rate_limit(limiter: SlidingWindowLimiter, notify: Notify, on_limited: Callable[[], None]) -> Middleware:
    async def middleware(message: IncomingMessage, call_next: Next) -> None:
        if not limiter.allow(message.sender_id):
            on_limited()
            await notify(message, "您发送得太快了，请稍等片刻再试。\n\nYou are sending messages a little too fast; "
                                  "please wait a moment and try again.")
            return
        await call_next()

    return middleware


def message_policy(max_chars: int, notify: Notify) -> Middleware:
    """Unsupported message types and over-long messages get a polite answer instead of the model."""

    async def middleware(message: IncomingMessage, call_next: Next) -> None:
        if not message.supported:
            kind = {"picture": "图片 / pictures", "file": "文件 / files", "video": "视频 / videos"}.get(
                message.msgtype, message.msgtype)
            await notify(message, f"暂不支持处理{kind.split(' / ')[0]}，请发送文字消息。\n\n"
                                  f"Sorry, I cannot read {kind.split(' / ')[-1]} yet; please send text.")
            return
        if not message.text.strip():
            await notify(message, "请问有什么可以帮您？\n\nHow can I help you?")
            return
        if len(message.text) > max_chars:
            await notify(message, f"消息太长了（{len(message.text)} 字），请控制在 {max_chars} 字以内。\n\n"
                                  f"Your message is too long ({len(message.text)} characters); the limit is "
                                  f"{max_chars}.")
            return
        await call_next()

    return middleware
