"""Daily quotas end to end: the emulator, the connector process on a real Redis, the real inference server."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ..servers import ServerProcess, scrape
from .conftest import connector_process, start_connector
from .helpers import finalized, shown_texts
from .sandbox.helpers import new_app, send, wait_for

pytestmark = pytest.mark.slow


def test_third_message_refused_until_the_reset_and_quota_shows_usage(emulator, inference: ServerProcess,
                                                                     redis_server, log_dir: Path) -> None:
    client_id, secret = new_app(emulator)
    connector = start_connector(connector_process("connector-quota", emulator=emulator, client_id=client_id,
                                                  secret=secret, model_url=inference.url + "/v1",
                                                  redis_url=redis_server.url, quota_user_messages_per_day=2,
                                                  quota_user_tokens_per_day=100000),
                                log_dir, emulator, client_id)
    user = f"quota-{uuid.uuid4().hex[:8]}"
    redis = redis_server.client()
    try:
        conversation = send(emulator, client_id, "What is 2 + 2?", user=user)["conversationId"]
        finalized(emulator, conversation, 1)
        send(emulator, client_id, "And 3 + 3?", user=user)
        finalized(emulator, conversation, 2)
        tokens_key = wait_for(lambda: [k for k in redis.keys(f"appliance:quota:*:user:{user}:tokens")])[0]
        messages_key = tokens_key.removesuffix(":tokens") + ":messages"
        wait_for(lambda: redis.get(messages_key) == "2")
        tokens = int(redis.get(tokens_key))
        assert tokens > 0  # the completion tokens the model reported

        send(emulator, client_id, "And 4 + 4?", user=user)
        refusal = shown_texts(emulator, conversation, 3)[2]
        assert "今日额度已用完（2 条消息），将于 00:00 (Asia/Shanghai) 重置" in refusal
        assert "it resets at 00:00 (Asia/Shanghai)" in refusal
        assert len(shown_texts(emulator, conversation, 3)) == 3  # no model answer for it (nor before /quota's)

        send(emulator, client_id, "/quota", user=user)
        usage = shown_texts(emulator, conversation, 4)[3]
        assert "消息 / messages: 2 / 2" in usage and f"tokens: {tokens} / 100000" in usage
        assert "将于 00:00 (Asia/Shanghai) 重置" in usage
        assert redis.get(messages_key) == "2"  # refused and /quota: not charged

        samples = scrape(connector.url)
        assert samples['connector_quota_total{outcome="allowed"}'] == 2
        assert samples['connector_quota_total{outcome="refused"}'] == 1

        redis.delete(*redis.keys(f"appliance:quota:*:user:{user}:*"))  # the day is over
        send(emulator, client_id, "And 5 + 5?", user=user)
        assert len(shown_texts(emulator, conversation, 5)) == 5  # answered again
        wait_for(lambda: redis.get(messages_key) == "1")
    finally:
        connector.stop()
