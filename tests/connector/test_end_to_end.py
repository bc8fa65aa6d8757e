"""The connector end to end: real SDK handshake, the emulator, a real Redis, the real inference server."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from ..servers import ServerProcess, inference_server, metric, scrape
from .conftest import connector_process, start_connector
from .helpers import cards_of, finalized, replies_of, reply_texts, shown_texts
from .sandbox.helpers import new_app, send, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def app(emulator):
    return new_app(emulator)


@pytest.fixture
def connector(emulator, app, inference: ServerProcess, redis_server, log_dir: Path):
    proc = start_connector(connector_process("connector", emulator=emulator, client_id=app[0], secret=app[1],
                                             model_url=inference.url + "/v1", redis_url=redis_server.url),
                           log_dir, emulator, app[0])
    yield proc
    proc.stop()


def test_dm_conversation_keeps_context_and_reset_clears_it(emulator, app, connector, inference, redis_server) -> None:
    before = metric(scrape(inference.url), "vllm:prompt_tokens_total")
    first = send(emulator, app[0], "What is the capital of France?", user="alice")
    card = finalized(emulator, first["conversationId"], 1)[0]
    assert card["flowStatus"] == "3" and card["texts"]["msgContent"].strip()
    assert card["spaces"] == ["dtv1.card//IM_ROBOT.alice"]
    first_prompt = metric(scrape(inference.url), "vllm:prompt_tokens_total") - before

    second = send(emulator, app[0], "And of Germany?", user="alice")
    finalized(emulator, second["conversationId"], 2)
    second_prompt = metric(scrape(inference.url), "vllm:prompt_tokens_total") - before - first_prompt
    assert second_prompt > first_prompt + 10  # the first exchange went along as context

    key = f"appliance:ctx:dingtalk:{first['conversationId']}"
    wait_for(lambda: redis_server.client().llen(key) == 4)  # written just after the card is finalized
    history = [json.loads(t) for t in redis_server.client().lrange(key, 0, -1)]
    assert [t["role"] for t in history] == ["user", "assistant", "user", "assistant"]
    assert history[0]["content"] == "What is the capital of France?"
    assert 1700 < redis_server.client().ttl(key) <= 1800

    send(emulator, app[0], "/reset", user="alice")
    assert "新的会话" in shown_texts(emulator, first["conversationId"], 3)[2]
    assert redis_server.client().exists(key) == 0


def test_group_context_is_per_sender_and_mention_stripped(emulator, app, connector, redis_server) -> None:
    group = f"cidGroup{app[0]}"
    send(emulator, app[0], "hello from bob", user="bob", group=group, at_bot=True)
    send(emulator, app[0], "not for the bot", user="bob", group=group, at_bot=False)
    send(emulator, app[0], "hello from carol", user="carol", group=group, at_bot=True)
    cards = finalized(emulator, group, 2)
    assert all(c["spaces"] == [f"dtv1.card//IM_GROUP.{group}"] for c in cards)
    client = redis_server.client()
    wait_for(lambda: client.llen(f"appliance:ctx:dingtalk:{group}:carol") == 2)
    bob = [json.loads(t) for t in client.lrange(f"appliance:ctx:dingtalk:{group}:bob", 0, -1)]
    carol = [json.loads(t) for t in client.lrange(f"appliance:ctx:dingtalk:{group}:carol", 0, -1)]
    assert bob[0]["content"] == "hello from bob" and carol[0]["content"] == "hello from carol"  # no leading space
    time.sleep(0.5)
    assert len(cards_of(emulator, group)) == 2  # the message without a mention was never answered


def test_test_and_help_commands(emulator, app, connector) -> None:
    sent = send(emulator, app[0], "/test", user="dora")
    text = reply_texts(emulator, sent["conversationId"], 1)[0]
    assert "connector: 0.1.0" in text and "SmolLM2-135M-Instruct" in text and "inference server: ok" in text
    send(emulator, app[0], "/help", user="dora")
    assert "/reset" in shown_texts(emulator, sent["conversationId"], 2)[1]
    send(emulator, app[0], "/test please", user="dora")  # not an exact command: goes to the model
    assert "connector: 0.1.0" not in shown_texts(emulator, sent["conversationId"], 3)[2]


def test_unsupported_types_get_a_polite_reply(emulator, app, connector) -> None:
    sent = send(emulator, app[0], "", user="erin", msgtype="picture")
    assert "图片" in reply_texts(emulator, sent["conversationId"], 1)[0]
    voice = send(emulator, app[0], "What is two plus two?", user="erin", msgtype="audio")
    card = finalized(emulator, voice["conversationId"], 1)[0]
    assert card["texts"]["msgContent"].strip()


def test_redelivery_never_gets_a_second_reply(emulator, app, connector, inference, redis_server, log_dir) -> None:
    sent = send(emulator, app[0], "Say hello.", user="frank")
    finalized(emulator, sent["conversationId"], 1)
    httpx.post(emulator.url + f"/sandbox/pushes/{sent['msgId']}/redeliver")
    # across a restart (the dedup marker lives in Redis) and across two replicas sharing it
    connector.stop()
    replicas = [start_connector(connector_process(f"replica-{i}", emulator=emulator, client_id=app[0], secret=app[1],
                                                  model_url=inference.url + "/v1", redis_url=redis_server.url),
                                log_dir, emulator, app[0]) for i in range(2)]
    try:
        for _ in range(4):
            httpx.post(emulator.url + f"/sandbox/pushes/{sent['msgId']}/redeliver")
        other = send(emulator, app[0], "Say goodbye.", user="frank")
        for _ in range(3):
            httpx.post(emulator.url + f"/sandbox/pushes/{other['msgId']}/redeliver")
        finalized(emulator, sent["conversationId"], 2)
        time.sleep(1.5)
        assert len(cards_of(emulator, sent["conversationId"])) == 2  # one per message, whatever the redeliveries
        acks = httpx.get(emulator.url + "/sandbox/acks", params={"msg_id": sent["msgId"]}).json()
        # deliveries were ACKed on receipt (one may race a connector that is shutting down)
        assert len(acks) >= 5 and all(a["code"] == 200 for a in acks)
        duplicates = sum(scrape(r.url).get("connector_duplicates_total", 0) for r in replicas)
        assert duplicates >= 6
    finally:
        for replica in replicas:
            replica.stop()


def test_fifty_conversations_stay_under_the_qps_limit(emulator, inference, redis_server, log_dir) -> None:
    client_id, secret = new_app(emulator, qps_limit=20)
    proc = start_connector(connector_process("connector-50", emulator=emulator, client_id=client_id, secret=secret,
                                             model_url=inference.url + "/v1", redis_url=redis_server.url,
                                             max_tokens=16, max_expected_wait_s=0),  # no shedding: all answered
                           log_dir, emulator, client_id)
    try:
        started = time.time()
        sent = [send(emulator, client_id, f"Tell me one fact about the number {i}.", user=f"load{i:02d}")
                for i in range(50)]
        for message in sent:
            finalized(emulator, message["conversationId"], 1, timeout=180)
        calls = [c for c in httpx.get(emulator.url + "/sandbox/calls", params={"since": started}).json()
                 if c["app"] == client_id]
        assert not [c for c in calls if c["status"] == 403], "a card call hit the QPS limit"
        by_api: dict[str, list[float]] = {}
        for c in calls:
            by_api.setdefault(c["path"], []).append(c["time"])
        for path, times in by_api.items():  # no one-second window holds more than 20 calls of one API
            times.sort()
            assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= 20, path
        cards = [cards_of(emulator, m["conversationId"])[0] for m in sent]
        assert all(c["finalized"] and c["flowStatus"] == "3" for c in cards), \
            [(c["flowStatus"], c["texts"]) for c in cards if c["flowStatus"] != "3"][:3]
    finally:
        proc.stop()


def test_permission_errors_fall_back_to_markdown(emulator, inference, log_dir) -> None:
    client_id, secret = new_app(emulator, scopes=["qyapi_robot_sendmsg"])
    proc = start_connector(connector_process("connector-perm", emulator=emulator, client_id=client_id,
                                             secret=secret, model_url=inference.url + "/v1"),
                           log_dir, emulator, client_id)
    try:
        first = send(emulator, client_id, "What is the capital of France?", user="gina")
        text = reply_texts(emulator, first["conversationId"], 1, timeout=60)[0]
        assert text.strip()
        reply = replies_of(emulator, first["conversationId"])[0]
        assert reply["via"] == "sessionWebhook" and reply["msgtype"] == "markdown"
        send(emulator, client_id, "Another question?", user="gina")
        httpx.post(emulator.url + "/sandbox/webhooks/expire")  # expires while the model is still answering
        wait_for(lambda: len(replies_of(emulator, first["conversationId"])) >= 2, timeout=60)
        assert replies_of(emulator, first["conversationId"])[1]["via"] == "robot.oToMessages"
        log = proc.log()
        assert log.count("lacks the permission Card.Instance.Write") == 1  # logged once, naming the scope
        assert scrape(proc.url)['connector_replies_total{path="webhook"}'] == 1
    finally:
        proc.stop()


def test_model_failure_mid_stream_then_recovery(emulator, app, redis_server, log_dir) -> None:
    model = inference_server("inference-killable", max_model_len=1024)
    model.start(log_dir).wait_ready()
    proc = start_connector(connector_process("connector-fail", emulator=emulator, client_id=app[0], secret=app[1],
                                             model_url=model.url + "/v1", max_tokens=400),
                           log_dir, emulator, app[0])
    try:
        sent = send(emulator, app[0], "Write a long story about a robot.", user="hank")
        wait_for(lambda: (c := cards_of(emulator, sent["conversationId"])) and c[0]["flowStatus"] == "2", timeout=60)
        model.stop(signal.SIGKILL)
        card = finalized(emulator, sent["conversationId"], 1, timeout=30)[0]
        assert card["flowStatus"] == "5" and card["error"]
        assert "模型服务暂时不可用" in card["texts"]["msgContent"]
        model.proc = None
        model.start(log_dir).wait_ready()
        again = send(emulator, app[0], "Are you back?", user="hank")
        cards = finalized(emulator, again["conversationId"], 2, timeout=60)
        assert cards[-1]["flowStatus"] == "3"
    finally:
        proc.stop()
        model.stop()


def test_redis_down_and_back(emulator, app, inference, log_dir, tmp_path) -> None:
    from ..servers import free_port
    from .conftest import RedisServer

    redis = RedisServer(free_port(), tmp_path).start()
    proc = start_connector(connector_process("connector-redis", emulator=emulator, client_id=app[0], secret=app[1],
                                             model_url=inference.url + "/v1", redis_url=redis.url),
                           log_dir, emulator, app[0])
    try:
        sent = send(emulator, app[0], "Hello!", user="ivan")
        finalized(emulator, sent["conversationId"], 1)
        redis.stop()
        send(emulator, app[0], "Still there?", user="ivan")
        finalized(emulator, sent["conversationId"], 2)  # answered without history
        # the turn is stored after the card is finished: wait until that write has been tried (and failed), or a
        # Redis restarted meanwhile would take it and the context below would hold two turns
        wait_for(lambda: httpx.get(proc.url + "/health").json()["in_flight"] == 0)
        assert httpx.get(proc.url + "/health").json()["redis"] == "down"
        assert scrape(proc.url)['connector_errors_total{kind="redis"}'] >= 1
        redis.start()
        send(emulator, app[0], "Back again.", user="ivan")
        finalized(emulator, sent["conversationId"], 3)
        key = f"appliance:ctx:dingtalk:{sent['conversationId']}"
        wait_for(lambda: redis.client().llen(key) == 2)
        assert httpx.get(proc.url + "/health").json()["redis"] == "up"
        assert proc.proc.poll() is None
    finally:
        proc.stop()
        redis.stop()


def test_dropped_and_silent_sockets_reconnect_without_duplicates(emulator, app, inference, log_dir) -> None:
    proc = start_connector(connector_process("connector-net", emulator=emulator, client_id=app[0], secret=app[1],
                                             model_url=inference.url + "/v1", heartbeat_interval_s=1.0),
                           log_dir, emulator, app[0])
    try:
        def live() -> list[dict]:
            return [c for c in httpx.get(emulator.url + "/sandbox/connections").json()
                    if c["app"] == app[0] and not c["closed"] and not c["silent"]]

        first = live()[0]["connectionId"]
        httpx.post(emulator.url + "/sandbox/connections/drop", json={"app": app[0]})
        wait_for(lambda: [c for c in live() if c["connectionId"] != first], timeout=20)
        sent = send(emulator, app[0], "After the drop.", user="jane")
        finalized(emulator, sent["conversationId"], 1)

        second = live()[0]["connectionId"]
        httpx.post(emulator.url + "/sandbox/connections/silent", json={"app": app[0]})
        queued = send(emulator, app[0], "Sent while the socket was silent.", user="jane")
        assert not queued["sent"]
        wait_for(lambda: [c for c in live() if c["connectionId"] not in (first, second)], timeout=20)
        finalized(emulator, sent["conversationId"], 2)
        time.sleep(1)
        assert len(cards_of(emulator, sent["conversationId"])) == 2
        assert len([c for c in httpx.get(emulator.url + "/sandbox/connections").json()
                    if c["app"] == app[0] and not c["closed"] and not c["silent"]]) == 1  # one live connection
        assert "no heartbeat answer" in proc.log()
    finally:
        proc.stop()


def test_sigterm_drains_in_flight_cards(emulator, app, inference, log_dir) -> None:
    proc = start_connector(connector_process("connector-term", emulator=emulator, client_id=app[0], secret=app[1],
                                             model_url=inference.url + "/v1", max_tokens=60),
                           log_dir, emulator, app[0])
    sent = send(emulator, app[0], "Count from one to thirty.", user="kate")
    wait_for(lambda: (c := cards_of(emulator, sent["conversationId"])) and c[0]["flowStatus"] == "2", timeout=60)
    assert proc.stop(signal.SIGTERM, timeout=60) == 0
    card = cards_of(emulator, sent["conversationId"])[0]
    assert card["finalized"] and card["flowStatus"] == "3"
    assert "connector stopped" in proc.log()
