"""Serving owns every endpoint: /tokenize, /v1/models and the status routes have serving objects; chat
and completions share one response path that releases the admission slot once; SIGTERM's drain."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import httpx
import pytest
from starlette.requests import ClientDisconnect

from inference.errors import EngineFailure, NotReady
from inference.serving.admission import AdmissionController
from inference.serving.base import _SSEResponse
from inference.serving.drain import Drain

from .fakes import FakeEngine, started_app

MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture
async def app_client():
    async with AsyncExitStack() as stack:
        async def make(engine: FakeEngine | None = None, **settings: object):
            return await stack.enter_async_context(started_app(engine, **settings))

        yield make


async def test_tokenize_and_models_have_serving_objects(app_client) -> None:
    app, client = await app_client()
    assert type(app.state.serving_tokenize).__name__ == "ServingTokenize"
    r = await client.post("/tokenize", json={"messages": MESSAGES})
    assert r.json() == {"count": 3, "max_model_len": 64, "tokens": [5, 5, 0], "token_strs": None}  # as vLLM's
    r = await client.post("/tokenize", json={"prompt": "one three", "return_tokens": True})
    assert r.json()["tokens"] == [3, 5]
    r = await client.post("/tokenize", json={"model": "other", "prompt": "x"})
    assert r.status_code == 404
    r = await client.post("/tokenize", json={})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    models = (await client.get("/v1/models")).json()["data"]
    assert [(m["id"], m["max_model_len"]) for m in models] == [("fake-model", 64)]
    assert models[0]["created"] == app.state.serving_models.created
    version = (await client.get("/version")).json()
    assert version["engine"] == "fake" and "torch" not in version  # no library version reported: none shown


@pytest.mark.parametrize("path,body", [("/v1/chat/completions", {"messages": MESSAGES}),
                                       ("/v1/completions", {"prompt": "one two"})])
@pytest.mark.parametrize("stream", [False, True])
async def test_one_response_path_releases_the_slot_once(app_client, path: str, body: dict, stream: bool) -> None:
    app, client = await app_client(max_num_seqs=2, max_waiting=0)
    admission = app.state.admission
    for _ in range(3):  # more requests than slots, one after another: each gives its slot back
        r = await client.post(path, json={**body, "max_tokens": 3, "n": 2, "stream": stream})
        assert r.status_code == 200, r.text
        assert admission.in_flight == 0
    engine = app.state.engine
    engine.fail_after = 1
    r = await client.post(path, json={**body, "max_tokens": 3, "stream": stream})
    assert r.status_code == (200 if stream else 500)
    assert admission.in_flight == 0


async def test_a_stream_never_started_still_releases_its_slot() -> None:
    admission = AdmissionController(1, 0)
    slot = admission.acquire(1)
    started = False

    async def events():
        nonlocal started
        started = True
        yield "data: x\n\n"

    async def receive() -> dict:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        raise OSError("the client is gone")

    with pytest.raises(ClientDisconnect):
        await _SSEResponse(events(), slot)({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)
    assert not started and admission.in_flight == 0
    slot.release()  # idempotent
    assert admission.in_flight == 0


def test_drain_refuses_new_requests_then_ends_running_ones_at_the_deadline() -> None:
    now = [100.0]
    drain = Drain(20.0, clock=lambda: now[0])
    drain.refuse_new()
    drain.check_deadline()
    assert not drain.draining and drain.graceful_shutdown_s == 25
    drain.start()
    with pytest.raises(NotReady, match="shutting down"):
        drain.refuse_new()
    now[0] = 119.0
    drain.start()  # a second SIGTERM does not move the deadline
    drain.check_deadline()
    now[0] = 120.5
    with pytest.raises(EngineFailure, match="shutting down"):
        drain.check_deadline()


class _SigtermDuringGeneration(FakeEngine):
    """Starts the drain (as SIGTERM would) after the second delta; a request then arrives."""

    drain: Drain | None = None
    refused: httpx.Response | None = None
    client: httpx.AsyncClient | None = None

    async def generate(self, request):
        count = 0
        async for delta in super().generate(request):
            count += 1
            if count == 2 and self.drain is not None:
                self.drain.start()
                self.refused = await self.client.post("/v1/chat/completions", json={"messages": MESSAGES})
            yield delta


async def test_draining_server_answers_503_and_ends_streams(app_client) -> None:
    engine = _SigtermDuringGeneration(delay=0.02)
    app, client = await app_client(engine, drain_timeout_s=0.1)
    engine.drain, engine.client = app.state.drain, client
    r = await client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 50, "stream": True})
    events = [line for line in r.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and "shutting down" in events[-2]
    assert 4 < len(events) < 40  # ended at the deadline, not after 50 tokens
    assert engine.refused.status_code == 503 and "shutting down" in engine.refused.json()["error"]["message"]
    assert app.state.admission.in_flight == 0
