"""The middlewares, one job each, their paths from the app's routers: the API key on the OpenAI API only,
the body limit, and request metrics labelled by route path."""

from __future__ import annotations

import httpx
import pytest

from inference.api import V1, openai_api, operations
from inference.app import create_app, route_paths
from inference.metrics import Metrics
from inference.middleware import BodyLimit, RequestMetrics
from inference.settings import InferenceSettings
from inference.types import EngineStats

from .fakes import FakeEngine, NoGpu

KEY = "sk-middleware-test-key"
API_PATHS = sorted(route_paths(openai_api))
OPEN_PATHS = sorted(route_paths(operations))


def _client(**settings: object) -> httpx.AsyncClient:
    app = create_app(InferenceSettings(served_model_name="fake-model", warmup=False, **settings), FakeEngine(),
                     gpus=NoGpu())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _method(path: str) -> str:
    return "GET" if path in ("/v1/models", "/health", "/ready", "/metrics", "/version") else "POST"


def test_the_routers_split_the_api_from_the_operations() -> None:
    assert API_PATHS == ["/detokenize", "/tokenize", "/v1/chat/completions", "/v1/completions", "/v1/models"]
    assert OPEN_PATHS == ["/health", "/metrics", "/ready", "/version"]
    assert all(path.startswith(V1 + "/") or path in ("/tokenize", "/detokenize") for path in API_PATHS)


@pytest.mark.parametrize("path", API_PATHS)
async def test_every_api_route_needs_the_key(path: str) -> None:
    async with _client(api_key=KEY) as client:
        r = await client.request(_method(path), path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "invalid_api_key"
        r = await client.request(_method(path), path, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code != 401


@pytest.mark.parametrize("path", OPEN_PATHS)
async def test_operations_stay_open(path: str) -> None:
    async with _client(api_key=KEY) as client:
        assert (await client.get(path)).status_code != 401


async def test_unknown_paths_under_v1_need_the_key_others_are_404() -> None:
    async with _client(api_key=KEY) as client:
        assert (await client.get("/v1/nothing")).status_code == 401
        assert (await client.get("/v1/nothing", headers={"Authorization": f"Bearer {KEY}"})).status_code == 404
        assert (await client.post("/nothing", json={})).status_code == 404  # no such route: nothing to protect
    async with _client() as client:  # no key set: nothing is protected
        assert (await client.get("/v1/models")).status_code == 200


class _Echo:
    """An ASGI app that answers with the body it read."""

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


async def _call(app, method: str, chunks: list[bytes], headers: list | None = None) -> tuple[int, bytes]:
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict] = []

    async def receive() -> dict:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "path": "/x", "headers": headers or []}, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_body_limit_by_header_and_while_reading() -> None:
    limit = BodyLimit(_Echo(), max_body_bytes=10)
    assert await _call(limit, "POST", [b"12345", b"678"]) == (200, b"12345678")  # replayed whole
    status, body = await _call(limit, "POST", [b"123456", b"789012"])  # no Content-Length: counted as read
    assert status == 413 and b"payload_too_large" in body
    assert (await _call(limit, "POST", [b""], [(b"content-length", b"11")]))[0] == 413
    assert (await _call(limit, "GET", [b"x" * 50]))[0] == 200  # only bodies that routes read are limited


async def test_body_limit_in_the_app() -> None:
    async with _client(max_body_bytes=2048) as client:
        r = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 4096}]})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def _metrics() -> Metrics:
    return Metrics(EngineStats, lambda: 0, NoGpu())


async def test_metrics_label_known_paths_and_other() -> None:
    metrics = _metrics()
    app = RequestMetrics(_Echo(), metrics=metrics, paths={"/x"})
    await _call(app, "POST", [b"a"])
    other = RequestMetrics(_Echo(), metrics=metrics, paths={"/y"})
    await _call(other, "POST", [b"a"])
    assert metrics.requests.labels("/x", "200")._value.get() == 1
    assert metrics.requests.labels("other", "200")._value.get() == 1


async def test_metrics_labels_come_from_the_app_routes() -> None:
    async with _client(api_key=KEY) as client:
        auth = {"Authorization": f"Bearer {KEY}"}
        for path in API_PATHS + OPEN_PATHS:
            await client.request(_method(path), path, headers=auth, json={} if _method(path) == "POST" else None)
        await client.get("/v1/models")  # 401, still counted under its route
        await client.get("/no/such/path")
        text = (await client.get("/metrics")).text
    labels = {line.split('endpoint="')[1].split('"')[0] for line in text.splitlines()
              if line.startswith("llm_requests_total{")}
    assert labels == set(API_PATHS + OPEN_PATHS) | {"other"}
    assert 'llm_requests_total{endpoint="/v1/models",status="401"} 1.0' in text
