"""Replies on DingTalk: AI cards streamed with isFull updates, with markdown fallbacks.

A card shows the thinking state at once (createAndDeliver, flowStatus 1), then
full-text updates at most every `card_update_interval_s` per card and under the
app-wide card budget, then isFinalize and flowStatus 3 (or isError and 5); the final update goes before other
answers' waiting updates, and when DingTalk refuses it on every attempt the card is still closed (flowStatus 5)
and the answer goes by markdown: no card is left "generating".
When cards cannot be used (missing permission, unpublished template, repeated
QPS / 5xx errors) the answer goes by markdown through the sessionWebhook, or the
robot send API once the webhook has expired; cards are tried again after a cool-off.

A message that has to wait gets its card at arrival (`acknowledge`), showing "queued, N ahead of you"; the
position is refreshed within a share of the card budget (`POSITION_SHARE` of `card_qps`: positions are
optional, answers are not), the card turns to the thinking state when work starts, and the same card then
streams the answer (or shows a notice sent with `send_text`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.messages import ALREADY_HANDLED, QUEUED, REPLY_INTERRUPTED, REPLY_TITLE
from ..core.ratelimit import TokenBucket
from ..settings import ConnectorSettings
from ..types import IncomingMessage
from .markdown import for_dingtalk, split_markdown
from .message import extras_of
from .openapi import DingTalkAPI, DingTalkAPIError

log = logging.getLogger("connector.dingtalk.replies")

CARD_FAILURES_BEFORE_FALLBACK = 3
POSITION_SHARE = 0.25  # of the app-wide card budget, at most, for refreshing queue positions


@dataclass
class ReplyHooks:
    on_reply: Callable[[str], None] = lambda path: None  # "card" | "webhook" | "robot"
    on_first_card_call: Callable[[float], None] = lambda seconds: None
    on_first_token_shown: Callable[[float], None] = lambda seconds: None
    on_error: Callable[[str], None] = lambda kind: None


@dataclass
class CardAvailability:
    """Cards are skipped for a cool-off after a permission / template error or repeated failures."""

    cooloff_s: float
    until: float = 0.0
    reason: str = ""
    live: set = field(default_factory=set)  # replies with an open card, finalized on shutdown

    def usable(self) -> bool:
        return time.monotonic() >= self.until

    def cool_off(self, reason: str) -> None:
        if self.usable():
            log.warning("AI cards paused for %.0f s (%s); replying by markdown meanwhile", self.cooloff_s, reason)
        self.until = time.monotonic() + self.cooloff_s
        self.reason = reason


class DingTalkReplies:
    """The ReplySink for DingTalk."""

    def __init__(self, api: DingTalkAPI, settings: ConnectorSettings, hooks: ReplyHooks | None = None) -> None:
        self.api, self.settings = api, settings
        self.hooks = hooks or ReplyHooks()
        self.cards = CardAvailability(settings.card_cooloff_s)
        self.positions = TokenBucket(rate=settings.card_qps * POSITION_SHARE, capacity=1.0)
        self.queued: dict[str, CardReply] = {}  # acknowledged messages' cards, until their reply takes them
        self._background: set[asyncio.Task] = set()

    @staticmethod
    def _queued_key(message: IncomingMessage) -> str:
        return message.delivery_id or message.message_id

    def acknowledge(self, message: IncomingMessage, ahead: int) -> CardReply | None:
        """A card saying the message is queued, created now; None while cards cannot be used (no permission:
        the answer comes by markdown later, as without a queue)."""
        key = self._queued_key(message)
        if not self.cards.usable() or key in self.queued:
            return None
        reply = self.queued[key] = CardReply(self, message)
        reply.queue(ahead)
        return reply

    def release(self, message: IncomingMessage) -> None:
        reply = self.queued.pop(self._queued_key(message), None)
        if reply is not None:
            self._spawn(reply.finish(ALREADY_HANDLED()))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def stream_reply(self, message: IncomingMessage) -> CardReply:
        return self.queued.pop(self._queued_key(message), None) or CardReply(self, message)

    async def send_text(self, message: IncomingMessage, markdown: str, title: str = "") -> None:
        reply = self.queued.pop(self._queued_key(message), None)
        if reply is not None and await reply.created():
            await reply.finish(markdown)  # the queued card shows the notice or the command's answer
            return
        await self.send_markdown(message, markdown, title)

    async def send_markdown(self, message: IncomingMessage, text: str, title: str = "") -> str:
        """Markdown by the sessionWebhook, or by the robot API when the webhook has expired. Returns the path."""
        text = for_dingtalk(text)
        title = title or (text.strip().splitlines() or [""])[0][:20].lstrip("#* ") or REPLY_TITLE()
        chunks = split_markdown(text, self.settings.webhook_chunk_chars)
        extras = extras_of(message)
        path = "webhook"
        for index, chunk in enumerate(chunks):
            part_title = title if len(chunks) == 1 else f"{title} ({index + 1}/{len(chunks)})"
            if path == "webhook" and extras.webhook_valid() and extras.session_webhook:
                try:
                    answer = await self.api.post_webhook(extras.session_webhook, {
                        "msgtype": "markdown", "markdown": {"title": part_title, "text": chunk},
                        "at": {"atUserIds": [message.sender_id]} if message.conversation_kind == "group" else {}})
                    if answer.get("errcode") == 0:
                        continue
                    log.info("session webhook refused (%s); using the robot API", answer.get("errcode"))
                except DingTalkAPIError as exc:
                    log.warning("session webhook failed (%s); using the robot API", exc)
            path = "robot"
            await self._robot_send(message, part_title, chunk)
        self.hooks.on_reply(path)
        return path

    async def _robot_send(self, message: IncomingMessage, title: str, text: str) -> None:
        param = json.dumps({"title": title, "text": text}, ensure_ascii=False)
        if message.conversation_kind == "group":
            await self.api.call("POST", "/v1.0/robot/groupMessages/send", {
                "robotCode": self.settings.robot, "openConversationId": message.conversation_id,
                "msgKey": "sampleMarkdown", "msgParam": param})
        else:
            await self.api.call("POST", "/v1.0/robot/oToMessages/batchSend", {
                "robotCode": self.settings.robot, "userIds": [message.sender_id], "msgKey": "sampleMarkdown",
                "msgParam": param})


class CardReply:
    """One answer: an AI card when cards are usable, else one markdown message at the end."""

    def __init__(self, owner: DingTalkReplies, message: IncomingMessage) -> None:
        self.owner, self.message = owner, message
        self.settings = owner.settings
        self.out_track_id = uuid.uuid4().hex
        self.card = False
        self._latest = ""
        self._shown = ""
        self._dirty = asyncio.Event()
        self._flusher: asyncio.Task | None = None
        self._failures = 0
        self._cancelled = False
        self._degraded = False
        self._first_token_reported = False
        self.done = False
        self._creating: asyncio.Task | None = None  # the queued card being created
        self._position: int | None = None  # the queue position shown; None once work started
        self._content_lock = asyncio.Lock()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def queue(self, ahead: int) -> None:
        """Create the card now, showing the queue position (DingTalkReplies.acknowledge)."""
        self._position = ahead
        self._creating = asyncio.create_task(self._create(QUEUED(ahead=ahead)))

    async def created(self) -> bool:
        """Wait for the queued card's creation; True if there is a card."""
        if self._creating is not None:
            await asyncio.gather(self._creating, return_exceptions=True)
        return self.card

    def show_position(self, ahead: int) -> bool:
        if not self.card or self._position is None or self.done or ahead == self._position:
            return False
        if not self.owner.positions.try_acquire():
            return False
        self._position = ahead
        self.owner._spawn(self._set_content(QUEUED(ahead=ahead), queued=True))
        return True

    async def _set_content(self, content: str, *, queued: bool = False) -> None:
        """The card's text outside streaming: the queue position, then empty (thinking) when work starts."""
        async with self._content_lock:
            if queued and self._position is None or self.done:
                return  # work started meanwhile: the position is stale
            try:
                await self.owner.api.call("PUT", "/v1.0/card/instances", {
                    "outTrackId": self.out_track_id,
                    "cardData": {"cardParamMap": {"flowStatus": "1", self.settings.card_content_key: content}},
                    "cardUpdateOptions": {"updateCardDataByKey": True}})
            except DingTalkAPIError as exc:
                self.owner.hooks.on_error(f"card_{exc.kind}")

    async def start(self) -> None:
        if self._creating is not None:
            self._position = None
            if await self.created():
                await self._set_content("")  # work starts: from "queued" to the thinking state
                return
        await self._create("")

    async def _create(self, content: str) -> None:
        if not self.owner.cards.usable():
            return
        msg = self.message
        body = {
            "cardTemplateId": self.settings.card_template_id, "outTrackId": self.out_track_id,
            "cardData": {"cardParamMap": {"flowStatus": "1", self.settings.card_content_key: content}},
            "callbackType": "STREAM", "userIdType": 1,
            "imGroupOpenSpaceModel": {"supportForward": True}, "imRobotOpenSpaceModel": {"supportForward": True},
        }
        if msg.conversation_kind == "group":
            body["openSpaceId"] = f"dtv1.card//IM_GROUP.{msg.conversation_id}"
            body["imGroupOpenDeliverModel"] = {"robotCode": self.settings.robot,
                                               "atUserIds": {msg.sender_id: msg.sender_name}}
        else:
            body["openSpaceId"] = f"dtv1.card//IM_ROBOT.{msg.sender_id}"
            body["imRobotOpenDeliverModel"] = {"spaceType": "IM_ROBOT"}
        try:
            await self.owner.api.call("POST", "/v1.0/card/instances/createAndDeliver", body, urgent=True)
        except DingTalkAPIError as exc:
            self.owner.hooks.on_error(f"card_{exc.kind}")
            if exc.permission or exc.template or exc.retryable:
                self.owner.cards.cool_off(f"{exc.code}" + (f" missing {exc.required_scopes}" if exc.required_scopes
                                                           else ""))
            return
        self.card = True
        self.owner.cards.live.add(self)
        self.owner.hooks.on_first_card_call(time.monotonic() - msg.received_at)
        self._flusher = asyncio.create_task(self._flush_loop())

    def update(self, text: str) -> None:
        self._latest = text
        if self.card and not self._degraded:
            self._dirty.set()

    async def _stream(self, content: str, *, finalize: bool = False, error: bool = False) -> None:
        """A full-text update; the final one goes before the waiting updates of other answers (`urgent`)."""
        await self.owner.api.call("PUT", "/v1.0/card/streaming", {
            "outTrackId": self.out_track_id, "guid": uuid.uuid4().hex, "key": self.settings.card_content_key,
            "content": content, "isFull": True, "isFinalize": finalize, "isError": error}, urgent=finalize)

    async def _flush_loop(self) -> None:
        interval = self.settings.card_update_interval_s
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            text = self._latest
            if text == self._shown:
                continue
            started = time.monotonic()
            try:
                await self._stream(for_dingtalk(text))
                self._shown = text
                self._failures = 0
                if not self._first_token_reported and text.strip():
                    self._first_token_reported = True
                    self.owner.hooks.on_first_token_shown(time.monotonic() - self.message.received_at)
            except DingTalkAPIError as exc:
                self.owner.hooks.on_error(f"card_{exc.kind}")
                if not exc.retryable:  # the card is gone or forbidden: nothing more can be shown
                    self._cancelled = True
                    return
                self._failures += 1
                if self._failures >= CARD_FAILURES_BEFORE_FALLBACK:
                    self._degraded = True  # keep generating; the answer goes by markdown at the end
                    self.owner.cards.cool_off(f"{self._failures} failed card updates ({exc.code})")
                    return
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _stop_flusher(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None

    async def finish(self, text: str) -> None:
        await self._close(text, error=False)

    async def fail(self, message: str, partial: str = "") -> None:
        shown = f"{partial.rstrip()}\n\n---\n{message}" if partial.strip() else message
        await self._close(shown, error=True)

    async def _close(self, text: str, *, error: bool) -> None:
        if self.done:
            return
        self.done = True
        await self._stop_flusher()
        self.owner.cards.live.discard(self)
        if self.card and not self._cancelled:
            shown = True
            try:
                await self._stream(for_dingtalk(text), finalize=True, error=error)
            except DingTalkAPIError as exc:
                self.owner.hooks.on_error(f"card_{exc.kind}")
                shown = False  # the answer goes by markdown; the card is still closed, as failed
            try:  # a card is never left "generating" (DingTalk users' common complaint: cards never finalized)
                await self.owner.api.call("PUT", "/v1.0/card/instances", {
                    "outTrackId": self.out_track_id,
                    "cardData": {"cardParamMap": {"flowStatus": "3" if shown and not error else "5"}},
                    "cardUpdateOptions": {"updateCardDataByKey": True}}, urgent=True)
            except DingTalkAPIError as exc:
                self.owner.hooks.on_error(f"card_{exc.kind}")
            if shown and not self._degraded:
                self.owner.hooks.on_reply("card")
                return
        if self._cancelled and self.card:
            text = (text.rstrip() + "\n\n" + REPLY_INTERRUPTED()) if text.strip() else text
        try:
            await self.owner.send_markdown(self.message, text or "…")
        except DingTalkAPIError as exc:
            self.owner.hooks.on_error(f"reply_{exc.kind}")
            log.error("could not deliver the reply to %s by any path: %s", self.message.message_id, exc)

    async def abort(self, notice: str) -> None:
        """Shutdown: finalize with a notice so no card is left half-open."""
        await self._close((self._latest.rstrip() + "\n\n---\n" + notice) if self._latest.strip() else notice,
                          error=True)
