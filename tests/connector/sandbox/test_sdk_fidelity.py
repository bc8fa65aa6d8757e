"""The unmodified dingtalk-stream SDK against the emulator: connect, receive, ACK, reply, cards, reconnect."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from .helpers import SdkBot, live_connections, new_app, send, wait_for

dingtalk_stream = pytest.importorskip("dingtalk_stream")
from dingtalk_stream import AckMessage  # noqa: E402

from connector.sandbox import SDK_AI_CARD_TEMPLATE  # noqa: E402


class Recorder(dingtalk_stream.ChatbotHandler):
    """Replies through the sessionWebhook; optionally streams an AI card or stalls before ACKing."""

    def __init__(self, mode: str = "text", stall_s: float = 0.0) -> None:
        super().__init__()
        self.mode, self.stall_s = mode, stall_s
        self.seen: list[tuple[str, str]] = []  # (headers.messageId, data.msgId)

    async def process(self, callback):
        message = dingtalk_stream.ChatbotMessage.from_dict(callback.data)
        self.seen.append((callback.headers.message_id, message.message_id))
        if self.stall_s:
            time.sleep(self.stall_s)  # ChatbotHandler ACKs only after process() returns
        if self.mode == "card":
            replier = dingtalk_stream.AICardReplier(self.dingtalk_client, message)
            card = replier.start(SDK_AI_CARD_TEMPLATE, {})
            for text in ("The answer", "The answer is", "The answer is **42**."):
                replier.streaming(card, "msgContent", text, append=False, finished=False, failed=False)
            replier.streaming(card, "msgContent", "The answer is **42**.", append=False, finished=True, failed=False)
        elif self.mode == "card2":
            replier = dingtalk_stream.CardReplier(self.dingtalk_client, message)
            replier.create_and_send_card(SDK_AI_CARD_TEMPLATE, {"msgContent": "static card"})
        else:
            self.reply_text(f"echo:{message.text.content.strip()}", message)
        return AckMessage.STATUS_OK, "OK"


@pytest.fixture
def app(emulator):
    return new_app(emulator)


def _replies(emulator, conversation_id: str) -> list[dict]:
    return httpx.get(emulator.url + "/sandbox/replies", params={"conversation_id": conversation_id}).json()


def test_chatbot_handler_receives_acks_and_replies_by_webhook(emulator, app) -> None:
    handler = Recorder()
    bot = SdkBot(emulator, *app, handler).start()
    try:
        sent = send(emulator, app[0], "hello there")
        replies = wait_for(lambda: _replies(emulator, sent["conversationId"]))
        assert replies[0]["content"]["content"] == "echo:hello there"
        assert replies[0]["via"] == "sessionWebhook"
        acks = wait_for(lambda: httpx.get(emulator.url + "/sandbox/acks", params={"msg_id": sent["msgId"]}).json())
        assert acks[0]["code"] == 200
        assert handler.seen[0][1] == sent["msgId"]
        assert acks[0]["messageId"] == handler.seen[0][0]
    finally:
        bot.stop()


def test_async_chatbot_handler_acks_at_once(emulator, app) -> None:
    replied = threading.Event()

    class Slow(dingtalk_stream.AsyncChatbotHandler):
        def process(self, callback):
            message = dingtalk_stream.ChatbotMessage.from_dict(callback.data)
            time.sleep(0.5)
            self.reply_markdown("answer", "**bold** reply", message)
            replied.set()

    bot = SdkBot(emulator, *app, Slow()).start()
    try:
        sent = send(emulator, app[0], "hi")
        acks = wait_for(lambda: httpx.get(emulator.url + "/sandbox/acks", params={"msg_id": sent["msgId"]}).json())
        assert not replied.is_set(), "AsyncChatbotHandler ACKs before process() finishes"
        assert acks[0]["code"] == 200
        reply = wait_for(lambda: _replies(emulator, sent["conversationId"]))[0]
        assert reply["msgtype"] == "markdown" and reply["content"]["text"] == "**bold** reply"
    finally:
        bot.stop()


def test_ai_card_replier_streams_to_the_end(emulator, app) -> None:
    bot = SdkBot(emulator, *app, Recorder("card")).start()
    try:
        sent = send(emulator, app[0], "question", group="cidGroupSdk01", at_bot=True)
        card = wait_for(lambda: [c for c in httpx.get(emulator.url + "/sandbox/cards",
                                                        params={"conversation_id": "cidGroupSdk01"}).json()
                                 if c["finalized"]])[0]
        assert card["texts"]["msgContent"] == "The answer is **42**."
        assert card["flowStatus"] == "3" and card["spaces"] == ["dtv1.card//IM_GROUP.cidGroupSdk01"]
        assert card["updates"] == 4
        assert sent["data"]["text"]["content"] == " question"  # the leading space where the mention was
    finally:
        bot.stop()


def test_card_replier_create_and_deliver_in_dm(emulator, app) -> None:
    bot = SdkBot(emulator, *app, Recorder("card2")).start()
    try:
        sent = send(emulator, app[0], "show a card", user="staff777")
        card = wait_for(lambda: httpx.get(emulator.url + "/sandbox/cards",
                                          params={"conversation_id": sent["conversationId"]}).json())[0]
        assert card["spaces"] == ["dtv1.card//IM_ROBOT.staff777"]
        assert card["params"]["msgContent"] == "static card"
    finally:
        bot.stop()


def test_reconnects_after_disconnect_frame(emulator, app) -> None:
    bot = SdkBot(emulator, *app, Recorder()).start()
    try:
        first = live_connections(emulator, app[0])[0]["connectionId"]
        httpx.post(emulator.url + "/sandbox/connections/disconnect", json={"app": app[0]})
        wait_for(lambda: [c for c in live_connections(emulator, app[0]) if c["connectionId"] != first], timeout=15)
        sent = send(emulator, app[0], "after reconnect")
        reply = wait_for(lambda: _replies(emulator, sent["conversationId"]))[0]
        assert reply["content"]["content"] == "echo:after reconnect"
        opens = [c for c in httpx.get(emulator.url + "/sandbox/calls",
                                      params={"path": "/v1.0/gateway/connections/open"}).json() if c["app"] == app[0]]
        assert len(opens) >= 2
    finally:
        bot.stop()


def test_unacked_message_is_redelivered_with_new_message_id(emulator, app) -> None:
    httpx.post(emulator.url + "/sandbox/config", json={"redeliver_after_s": 1.0})
    handler = Recorder(stall_s=2.0)
    bot = SdkBot(emulator, *app, handler).start()
    try:
        sent = send(emulator, app[0], "slow one")
        push = wait_for(lambda: (p := httpx.get(emulator.url + f"/sandbox/pushes/{sent['msgId']}").json())
                        ["deliveries"] >= 2 and p, timeout=10)
        assert len(set(push["messageIds"])) == len(push["messageIds"]) >= 2
        wait_for(lambda: len(handler.seen) >= 2, timeout=10)
        assert {msg_id for _, msg_id in handler.seen} == {sent["msgId"]}  # same data.msgId every time
        assert len({mid for mid, _ in handler.seen}) >= 2  # new headers.messageId each time
    finally:
        httpx.post(emulator.url + "/sandbox/config", json={"redeliver_after_s": 60.0})
        bot.stop()


def test_wrong_secret_is_rejected(emulator, app) -> None:
    import dingtalk_stream as sdk

    client = sdk.DingTalkStreamClient(sdk.Credential(app[0], "wrong-secret"))
    client.register_callback_handler(sdk.ChatbotMessage.TOPIC, Recorder())
    assert client.open_connection() is None
    assert client.get_access_token() is None
    calls = httpx.get(emulator.url + "/sandbox/calls", params={"path": "/v1.0/gateway/connections/open"}).json()
    # the emulator is shared: an earlier test's bot may still be reconnecting, so only calls without an app
    # (credentials refused) are ours, and none was let in for this app
    refused = [c for c in calls if c["app"] is None]
    assert refused and refused[-1]["status"] == 400 and refused[-1]["answer"]["code"] == "invalidClientIdOrSecret"
    assert not [c for c in calls if c["app"] == app[0]]
