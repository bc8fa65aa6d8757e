"""DingTalk replies (connector/dingtalk/replies.py) in-process against the emulator's real HTTP server: the AI
card's states (thinking, streaming, finalized, failed, aborted), a card that degrades to markdown, a card that is
gone, cards paused after a permission or template error, and the markdown paths (session webhook, robot API)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from connector.core.messages import REPLY_INTERRUPTED
from connector.dingtalk.markdown import for_dingtalk
from connector.dingtalk.message import DingTalkExtras, parse_chatbot_message
from connector.dingtalk.replies import DingTalkReplies, ReplyHooks
from connector.sandbox import SDK_AI_CARD_TEMPLATE
from connector.settings import ConnectorSettings
from connector.types import IncomingMessage

from ..helpers import replies_of
from ..sandbox.helpers import new_app, send
from .helpers import add_fault, calls_of, clear_faults, control, dingtalk_api

CREATE = "/v1.0/card/instances/createAndDeliver"
STREAM = "/v1.0/card/streaming"
FLOW = "/v1.0/card/instances#put"
WEBHOOK = "/robot/sendBySession"


@dataclasses.dataclass
class Seen:
    """What the reply sink reported through its hooks (the connector turns these into metrics)."""

    paths: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    first_card_call: list[float] = dataclasses.field(default_factory=list)
    first_token_shown: list[float] = dataclasses.field(default_factory=list)

    def hooks(self) -> ReplyHooks:
        return ReplyHooks(on_reply=self.paths.append, on_first_card_call=self.first_card_call.append,
                          on_first_token_shown=self.first_token_shown.append, on_error=self.errors.append)


@pytest.fixture
def wire(emulator, http) -> Callable[..., tuple[DingTalkReplies, Seen]]:
    """The reply sink of one app, as build_app wires it, on a real DingTalkAPI; fast retries and card updates."""

    def make(app: tuple[str, str], **settings: Any) -> tuple[DingTalkReplies, Seen]:
        s = ConnectorSettings(client_id=app[0], client_secret=app[1], openapi_endpoint=emulator.url,
                              **{"card_update_interval_s": 0.1, "retry_base_delay_s": 0.01, **settings})
        seen = Seen()
        return DingTalkReplies(dingtalk_api(emulator, http, app[0], app[1]), s, seen.hooks()), seen

    return make


def incoming(emulator, client_id: str, text: str = "question", **fields: Any) -> IncomingMessage:
    """A user's message as the emulator pushes it, parsed as the transport does (the session webhook included)."""
    pushed = send(emulator, client_id, text, **fields)
    return parse_chatbot_message(pushed["data"], uuid.uuid4().hex, time.monotonic())


def card(emulator, out_track_id: str) -> dict:
    return control(emulator, "GET", f"/sandbox/cards/{out_track_id}")


def card_calls(emulator, client_id: str, path: str, out_track_id: str) -> list[dict]:
    return [c for c in calls_of(emulator, client_id, path) if (c["body"] or {}).get("outTrackId") == out_track_id]


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
    return value


async def test_thinking_then_throttled_full_updates_then_finalized(emulator, app, wire) -> None:
    replies, seen = wire(app)
    message = incoming(emulator, app[0], user="ann")
    reply = replies.stream_reply(message)
    await reply.start()
    shown = card(emulator, reply.out_track_id)
    assert reply.card and shown["flowStatus"] == "1" and shown["params"]["msgContent"] == ""  # thinking
    assert shown["spaces"] == ["dtv1.card//IM_ROBOT.ann"] and shown["conversationId"] == message.conversation_id
    assert len(seen.first_card_call) == 1 and 0 <= seen.first_card_call[0] < 5

    words = [f"w{i}" for i in range(40)]
    started = time.monotonic()
    for i in range(1, len(words) + 1):  # a token every 10 ms for 0.4 s, cards updated at most every 0.1 s
        reply.update(" ".join(words[:i]))
        await asyncio.sleep(0.01)
    spent = time.monotonic() - started
    await eventually(lambda: card(emulator, reply.out_track_id)["texts"].get("msgContent") == " ".join(words))
    streamed = card_calls(emulator, app[0], STREAM, reply.out_track_id)
    assert 2 <= len(streamed) <= spent / 0.1 + 2, len(streamed)  # throttled, not one call per token
    assert all(c["body"]["isFull"] and not c["body"]["isFinalize"] and not c["body"]["isError"] for c in streamed)
    assert card(emulator, reply.out_track_id)["flowStatus"] == "2"  # inputting
    assert len(seen.first_token_shown) == 1

    await reply.finish("The final answer.")
    shown = card(emulator, reply.out_track_id)
    assert (shown["flowStatus"], shown["finalized"], shown["error"]) == ("3", True, False)
    assert shown["texts"]["msgContent"] == "The final answer."
    assert card_calls(emulator, app[0], FLOW, reply.out_track_id)[-1]["body"]["cardData"] == {
        "cardParamMap": {"flowStatus": "3"}}
    assert seen.paths == ["card"] and seen.errors == [] and replies.cards.live == set()
    assert replies_of(emulator, message.conversation_id) == []  # no markdown besides the card
    await reply.finish("again")  # closing twice does nothing
    assert card(emulator, reply.out_track_id)["texts"]["msgContent"] == "The final answer."


async def test_a_failure_shows_the_partial_answer_and_the_notice_in_a_group(emulator, app, wire) -> None:
    replies, seen = wire(app)
    group = "cid" + uuid.uuid4().hex
    message = incoming(emulator, app[0], group=group, user="bob", nick="Bob")
    reply = replies.stream_reply(message)
    await reply.start()
    deliver = calls_of(emulator, app[0], CREATE)[-1]["body"]
    assert deliver["openSpaceId"] == f"dtv1.card//IM_GROUP.{group}"
    assert deliver["imGroupOpenDeliverModel"]["atUserIds"] == {"bob": "Bob"}
    reply.update("half of it")
    await eventually(lambda: card(emulator, reply.out_track_id)["texts"].get("msgContent") == "half of it")
    await reply.fail("the model is unavailable", partial="half of it")
    shown = card(emulator, reply.out_track_id)
    assert (shown["flowStatus"], shown["finalized"], shown["error"]) == ("5", True, True)
    assert shown["texts"]["msgContent"] == for_dingtalk("half of it\n\n---\nthe model is unavailable")
    assert shown["conversationId"] == group and seen.paths == ["card"]

    bare = replies.stream_reply(incoming(emulator, app[0], group=group))
    await bare.start()
    await bare.fail("the model is unavailable")  # nothing streamed yet: the notice alone
    assert card(emulator, bare.out_track_id)["texts"]["msgContent"] == "the model is unavailable"


@pytest.mark.usefixtures("faults")
async def test_failing_card_updates_degrade_to_markdown_and_pause_cards(emulator, app, wire) -> None:
    replies, seen = wire(app)
    message = incoming(emulator, app[0])
    reply = replies.stream_reply(message)
    await reply.start()
    add_fault(emulator, STREAM, status=500, count=-1)
    for i in range(100):  # the generation goes on while card updates fail, three times over
        if not replies.cards.usable():
            break
        reply.update(f"tokens so far: {i}")
        await asyncio.sleep(0.05)
    assert not replies.cards.usable() and "failed card updates" in replies.cards.reason
    assert seen.errors == ["card_server"] * 3
    clear_faults(emulator)  # DingTalk is back by the end of the answer
    reply.update("ignored: the card is no longer updated")
    await reply.finish("The whole answer.")
    texts = [(r["via"], r["msgtype"], r["content"]["text"]) for r in replies_of(emulator, message.conversation_id)]
    assert texts == [("sessionWebhook", "markdown", "The whole answer.")]
    assert seen.paths == ["webhook"]
    assert card(emulator, reply.out_track_id)["texts"]["msgContent"] == "The whole answer."  # closed, not left open

    after = replies.stream_reply(incoming(emulator, app[0], "next question"))
    await after.start()  # cards are paused: no card, the answer goes by markdown at the end
    assert not after.card and len(calls_of(emulator, app[0], CREATE)) == 1
    await after.finish("Next answer.")
    assert seen.paths == ["webhook", "webhook"]


@pytest.mark.usefixtures("faults")
async def test_a_refused_final_update_still_closes_the_card_and_the_answer_goes_by_markdown(emulator, app, wire) -> None:
    """DingTalk refuses the final update for its QPS limit, every attempt: the card is not left "generating" (it
    is closed as failed) and the whole answer reaches the asker by the session webhook."""
    replies, seen = wire(app)
    message = incoming(emulator, app[0])
    reply = replies.stream_reply(message)
    await reply.start()
    add_fault(emulator, STREAM, status=403, code="Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", count=3)
    started = time.monotonic()
    await reply.finish("The whole answer.")
    assert time.monotonic() - started >= 1.8  # each retry waited for DingTalk's next one-second window
    shown = card(emulator, reply.out_track_id)
    assert (shown["flowStatus"], shown["finalized"]) == ("5", True)  # closed, as failed
    texts = [r["content"]["text"] for r in replies_of(emulator, message.conversation_id)]
    assert texts == ["The whole answer."] and seen.paths == ["webhook"] and seen.errors == ["card_qps"]
    assert replies.api.bucket.rate < replies.api.bucket.configured_rate  # and the app's budget slowed down


@pytest.mark.usefixtures("faults")
async def test_a_card_that_is_gone_cancels_the_reply(emulator, app, wire) -> None:
    replies, seen = wire(app)
    message = incoming(emulator, app[0])
    reply = replies.stream_reply(message)
    await reply.start()
    add_fault(emulator, STREAM, status=400, code="param.cardNotExist", count=1)
    reply.update("the first words")
    await eventually(lambda: reply.cancelled)
    assert len(card_calls(emulator, app[0], STREAM, reply.out_track_id)) == 1  # not retried: it cannot succeed
    reply.update("more words")
    await reply.finish("the first words and the rest")
    assert len(card_calls(emulator, app[0], STREAM, reply.out_track_id)) == 1  # nothing more sent to the card
    assert card_calls(emulator, app[0], FLOW, reply.out_track_id) == []
    texts = [r["content"]["text"] for r in replies_of(emulator, message.conversation_id)]
    assert texts == [for_dingtalk("the first words and the rest\n\n" + REPLY_INTERRUPTED())]
    assert seen.errors == ["card_client"] and seen.paths == ["webhook"] and replies.cards.usable()


@pytest.mark.parametrize(("config", "error", "reason"), [
    ({"scopes": ["Card.Streaming.Write", "qyapi_robot_sendmsg"]}, "card_permission", "Card.Instance.Write"),
    ({"templates": {SDK_AI_CARD_TEMPLATE: False}}, "card_template", "templateUnpublished"),
], ids=["permission", "unpublished-template"])
async def test_cards_unusable_at_creation_answer_by_webhook_and_pause(emulator, wire, config, error, reason) -> None:
    app = new_app(emulator, **config)
    replies, seen = wire(app, card_cooloff_s=60)
    message = incoming(emulator, app[0])
    reply = replies.stream_reply(message)
    await reply.start()
    assert not reply.card and seen.errors == [error] and seen.first_card_call == []
    assert not replies.cards.usable() and reason in replies.cards.reason
    reply.update("streamed tokens go nowhere")
    await reply.finish("Answer by markdown.")
    replied = replies_of(emulator, message.conversation_id)
    assert [(r["via"], r["content"]["text"]) for r in replied] == [("sessionWebhook", "Answer by markdown.")]
    assert seen.paths == ["webhook"]

    later = replies.stream_reply(incoming(emulator, app[0], "again"))
    await later.start()  # within the cool-off: not even tried
    assert not later.card and len(calls_of(emulator, app[0], CREATE)) == 1


async def test_markdown_goes_by_the_robot_api_once_the_webhook_has_expired(emulator, app, wire) -> None:
    replies, seen = wire(app)
    message = incoming(emulator, app[0], user="cat")
    extras = message.platform_extras
    assert isinstance(extras, DingTalkExtras) and extras.webhook_valid()
    expired = dataclasses.replace(message, platform_extras=dataclasses.replace(
        extras, session_webhook_expires_ms=int(time.time() * 1000) - 1))
    since = time.time()
    assert await replies.send_markdown(expired, "By the robot API.") == "robot"
    assert calls_of(emulator, None, WEBHOOK, since=since) == []  # known to be expired: not even tried
    sent = calls_of(emulator, app[0], "/v1.0/robot/oToMessages/batchSend")[-1]["body"]
    assert sent["userIds"] == ["cat"] and sent["msgKey"] == "sampleMarkdown" and sent["robotCode"] == app[0]

    group = "cid" + uuid.uuid4().hex
    in_group = incoming(emulator, app[0], group=group)
    control(emulator, "POST", "/sandbox/webhooks/expire")  # valid by its time, refused by DingTalk
    assert await replies.send_markdown(in_group, "Refused webhook, robot API.") == "robot"
    assert [(r["via"], r["content"]["text"]) for r in replies_of(emulator, group)] == [
        ("robot.groupMessages", "Refused webhook, robot API.")]

    elsewhere = IncomingMessage(platform="dingtalk", message_id="m1", delivery_id="d1",
                                conversation_id=message.conversation_id, conversation_kind="dm", sender_id="cat",
                                sender_name="Cat", text="hi", msgtype="text")  # no session webhook at all
    assert await replies.send_markdown(elsewhere, "No webhook known.") == "robot"
    assert [(r["via"], r["content"]["text"]) for r in replies_of(emulator, message.conversation_id)] == [
        ("robot.oToMessages", "By the robot API."), ("robot.oToMessages", "No webhook known.")]
    assert seen.paths == ["robot"] * 3


async def test_a_long_answer_goes_in_numbered_parts(emulator, app, wire) -> None:
    replies, _ = wire(app, webhook_chunk_chars=200)
    message = incoming(emulator, app[0])
    paragraphs = [f"Paragraph {i}: " + "text " * 25 for i in range(4)]
    assert await replies.send_markdown(message, "\n\n".join(paragraphs), title="Report") == "webhook"
    replied = replies_of(emulator, message.conversation_id)
    assert len(replied) >= 3 and all(len(r["content"]["text"]) <= 200 for r in replied)
    assert [r["content"]["title"] for r in replied] == [f"Report ({i}/{len(replied)})"
                                                        for i in range(1, len(replied) + 1)]
    joined = " ".join(r["content"]["text"] for r in replied)
    assert all(p.split(":")[0] in joined for p in paragraphs)


async def test_abort_on_shutdown_closes_the_card_with_a_notice(emulator, app, wire) -> None:
    replies, seen = wire(app)
    reply = replies.stream_reply(incoming(emulator, app[0]))
    await reply.start()
    reply.update("half an answer")
    await eventually(lambda: card(emulator, reply.out_track_id)["texts"].get("msgContent") == "half an answer")
    silent = replies.stream_reply(incoming(emulator, app[0]))
    await silent.start()
    assert replies.cards.live == {reply, silent}
    for open_reply in list(replies.cards.live):  # what the connector's shutdown does
        await open_reply.abort("restarting")
    shown = card(emulator, reply.out_track_id)
    assert (shown["flowStatus"], shown["error"]) == ("5", True)
    assert shown["texts"]["msgContent"] == for_dingtalk("half an answer\n\n---\nrestarting")
    assert card(emulator, silent.out_track_id)["texts"]["msgContent"] == "restarting"
    assert replies.cards.live == set() and seen.paths == ["card", "card"]
    await reply.abort("again")  # already closed: nothing happens
    assert card(emulator, reply.out_track_id)["texts"]["msgContent"] == for_dingtalk("half an answer\n\n---\nrestarting")
