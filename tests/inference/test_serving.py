"""Serving layer and app wiring with a fake engine: errors, admission, auth, streaming errors."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack

import httpx
import pytest

from inference.settings import InferenceSettings

from .fakes import FakeEngine, started_app

MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture
async def served():
    async with AsyncExitStack() as stack:
        async def make(engine: FakeEngine | None = None, **settings: object):
            engine = engine or FakeEngine()
            _, client = await stack.enter_async_context(started_app(engine, **settings))
            return engine, client

        yield make


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


async def test_chat_non_stream_and_usage(served) -> None:
    engine, client = await served()
    r = await client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 3})
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "alpha beta gamma "
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


async def test_stream_format_and_done(served) -> None:
    engine, client = await served()
    r = await client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 2, "stream": True,
                                                        "stream_options": {"include_usage": True}})
    lines = [line for line in r.text.split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert all("usage" in c for c in chunks)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


async def test_failure_mid_stream_is_an_error_chunk_then_done(served) -> None:
    engine, client = await served(FakeEngine(fail_after=2))
    r = await client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 5, "stream": True})
    assert r.status_code == 200
    events = [e.removeprefix("data: ") for e in r.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error" and "boom" in error["message"]


async def test_failure_non_stream_is_500_envelope(served) -> None:
    engine, client = await served(FakeEngine(fail_after=1))
    error = _error(await client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 5}), 500)
    assert error["code"] == "engine_error"


async def test_admission_429_with_retry_after(served) -> None:
    engine, client = await served(FakeEngine(delay=0.05), max_num_seqs=1, max_waiting=1)
    body = {"messages": MESSAGES, "max_tokens": 20}
    first = asyncio.create_task(client.post("/v1/chat/completions", json=body))
    second = asyncio.create_task(client.post("/v1/chat/completions", json=body))
    await asyncio.sleep(0.1)
    r = await client.post("/v1/chat/completions", json=body)
    error = _error(r, 429)
    assert r.headers["retry-after"] == "1" and error["type"] == "rate_limit_error"
    assert (await first).status_code == 200 and (await second).status_code == 200
    assert (await client.post("/v1/chat/completions", json={**body, "max_tokens": 1})).status_code == 200


async def test_n_larger_than_batch_is_400(served) -> None:
    engine, client = await served(max_num_seqs=2)
    assert _error(await client.post("/v1/chat/completions", json={"messages": MESSAGES, "n": 3}), 400)["param"] == "n"


async def test_context_length(served) -> None:
    engine, client = await served(FakeEngine(max_model_len=8))
    error = _error(await client.post("/v1/chat/completions",
                                     json={"messages": [{"role": "user", "content": "a " * 20}]}), 400)
    assert error["code"] == "context_length_exceeded" and "8 tokens" in error["message"]
    error = _error(await client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 7}), 400)
    assert error["param"] == "max_tokens"
    r = await client.post("/v1/chat/completions", json={"messages": MESSAGES})
    assert r.json()["usage"]["completion_tokens"] == 5  # default fills the rest of the window


async def test_auth(served) -> None:
    engine, client = await served(api_key="secret-key-1")
    assert _error(await client.get("/v1/models"), 401)["code"] == "invalid_api_key"
    assert (await client.get("/v1/models", headers={"Authorization": "Bearer secret-key-1"})).status_code == 200
    assert (await client.get("/v1/models", headers={"Authorization": "Basic secret-key-1"})).status_code == 401
    assert (await client.get("/health")).status_code == 200


async def test_body_limit(served) -> None:
    engine, client = await served(max_body_bytes=2048)
    r = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 4096}]})
    assert _error(r, 413)["code"] == "payload_too_large"


async def test_not_ready_is_503(served) -> None:
    engine, client = await served(FakeEngine(start_delay=5))
    r = await client.post("/v1/chat/completions", json={"messages": MESSAGES})
    assert _error(r, 503)["code"] == "model_loading"
    assert r.headers["retry-after"]
    assert (await client.get("/ready")).status_code == 503
    assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize("payload", [
    b"", b"null", b"[]", b"{", b"\x00\xff", b'{"messages": [{"role": "user", "content": 5}]}',
    b'{"messages": [{"role": "user"}], "stop": 7}', b'{"messages": [{"role": "tool", "content": "x"}]}',
    b'{"messages": [{"role": "user", "content": "x"}], "top_p": 0}',
    b'{"messages": [{"role": "user", "content": "x"}], "seed": 1e400}',
])
async def test_bad_input_never_500(served, payload: bytes) -> None:
    engine, client = await served()
    r = await client.post("/v1/chat/completions", content=payload, headers={"content-type": "application/json"})
    _error(r, 400)


async def test_completions_prompt_forms(served) -> None:
    engine, client = await served()
    for prompt in ("one two", ["one", "two three"], [1, 2, 3], [[1, 2], [3]]):
        r = await client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 2})
        assert r.status_code == 200, r.text
    _error(await client.post("/v1/completions", json={"prompt": [], "max_tokens": 2}), 400)
    _error(await client.post("/v1/completions", json={"prompt": [-1], "max_tokens": 2}), 400)


async def test_seed_per_choice(served) -> None:
    engine, client = await served()
    await client.post("/v1/chat/completions", json={"messages": MESSAGES, "n": 2, "seed": 10, "max_tokens": 1})
    assert [r.params.seed for r in engine.requests] == [10, 11]


async def test_metrics_count_status(served) -> None:
    engine, client = await served()
    await client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 1})
    await client.post("/v1/chat/completions", json={"messages": []})
    text = (await client.get("/metrics")).text
    assert 'llm_requests_total{endpoint="/v1/chat/completions",status="200"} 1.0' in text
    assert 'llm_requests_total{endpoint="/v1/chat/completions",status="400"} 1.0' in text


def test_settings_repr_hides_the_key() -> None:
    settings = InferenceSettings(api_key="very-secret-value")
    assert "very-secret-value" not in repr(settings)
    assert "very-secret-value" not in str(settings.model_dump())
