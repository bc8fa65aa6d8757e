"""The connector's sampling extensions (repetition_penalty, loop_guard) reach the model server in each chat
request's body, from the settings (ConnectorSettings.model_extra_body), and are left out when unset."""

from __future__ import annotations

import json

import httpx

from connector.core.model import ModelClient
from connector.core.retry import RetryPolicy
from connector.settings import ConnectorSettings

CHUNK = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
         "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
STREAM = f"data: {json.dumps(CHUNK)}\n\ndata: [DONE]\n\n"


async def _sent_body(extra_body: dict) -> dict:
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, text=STREAM, headers={"content-type": "text/event-stream"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = ModelClient("http://model/v1", "key", http, model="m", temperature=0.2, max_tokens=8, timeout_s=5,
                             connect_timeout_s=1, extra_body=extra_body,
                             retry=RetryPolicy(attempts=1, factor=1.5, base_delay_s=0.1, max_delay_s=1, jitter=0))
        assert [d async for d in client.stream_chat([{"role": "user", "content": "x"}])] == ["hi"]
    return bodies[0]


def test_settings_build_the_extra_body() -> None:
    assert ConnectorSettings(_env_file=None).model_extra_body() == {}
    assert ConnectorSettings(repetition_penalty=1.2, loop_guard=True).model_extra_body() == {
        "repetition_penalty": 1.2, "loop_guard": {"ngram": 12, "repeats": 2}}


async def test_the_extensions_are_sent_only_when_set() -> None:
    plain = await _sent_body({})
    assert "repetition_penalty" not in plain and "loop_guard" not in plain and plain["temperature"] == 0.2
    sent = await _sent_body({"repetition_penalty": 1.2, "loop_guard": True})
    assert sent["repetition_penalty"] == 1.2 and sent["loop_guard"] is True and sent["stream"] is True
