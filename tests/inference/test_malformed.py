"""Hand-made malformed and hostile inputs against the real server on the real model: never a 5xx."""

from __future__ import annotations

import json

import httpx
import pytest

from ..servers import ServerProcess

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
RAW_BODIES = [
    b'{"messages": [{"role": "user", "content": "\\ud800 lone surrogate"}], "max_tokens": 2}',
    b'{"messages": [{"role": "user", "content": "nul \\u0000 byte"}], "max_tokens": 2}',
    b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
    b'{"messages": [{"role": "user", "content": "x"}], "temperature": Infinity}',
    b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000000000000000000000000000}',
    b'{"messages": [{"role": "user", "content": "x"}], "seed": -99999999999999999999999999}',
    b'{"messages": [{"role": "user", "content": "x"}], "top_k": 99999999999, "max_tokens": 2}',
    b'{"messages": [{"role": "user", "content": "x"}], "messages": [], "max_tokens": 2}',
    b'{"messages": [{"role": "user", "content": "x", "content": 5}]}',
    b'{"messages": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}',
    b'{"messages": {"role": "user", "content": "x"}}',
    b'{"messages": [{"role": "user", "content": null}], "max_tokens": 2}',
    b'{"messages": [{"role": "user", "content": ""}], "max_tokens": 2}',
    b'{"messages": [{"role": "user", "content": [{"type": "text"}]}]}',
    b'{"messages": [{"role": "USER", "content": "x"}]}',
    b'{"messages": [{"role": "user", "content": "x"}], "model": 42}',
    b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes please"}',
    b'{"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": "maybe"}}',
    b'\xef\xbb\xbf{"messages": [{"role": "user", "content": "BOM"}], "max_tokens": 2}',
    b'{"messages": [{"role": "user", "content": "\xc3\x28 invalid utf-8"}]}',
    b"[" * 5000 + b"]" * 5000,
    b'{"messages": [{"role": "user", "content": "x"}]} trailing',
    b"null",
    b'"just a string"',
    b"",
]


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text[:300]
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("body", RAW_BODIES, ids=range(len(RAW_BODIES)))
def test_raw_bodies(inference: ServerProcess, body: bytes) -> None:
    _check(httpx.post(inference.url + CHAT, content=body, headers={"content-type": "application/json"}, timeout=60))


@pytest.mark.parametrize("payload", [
    {"messages": [{"role": "user", "content": "hi"}], "stop": ["x"] * 500, "max_tokens": 3},
    {"messages": [{"role": "user", "content": "hi"}], "stop": "y" * 5000, "max_tokens": 3},
    {"messages": [{"role": "user", "content": "🚀" * 3000}], "max_tokens": 2},
    {"messages": [{"role": "user", "content": "مرحبا " * 50 + "你好" * 50}], "max_tokens": 2},
    {"messages": [{"role": "assistant", "content": "only an assistant turn"}], "max_tokens": 2},
    {"messages": [{"role": "system", "content": "s"}] * 200, "max_tokens": 2},
    {"messages": [{"role": "user", "content": "hi"}], "n": 9},
    {"messages": [{"role": "user", "content": "hi"}], "n": 2, "stream": True, "max_tokens": 2, "seed": 1},
    {"messages": [{"role": "user", "content": "x" * 900_000}]},
])
def test_hostile_payloads(inference: ServerProcess, payload: dict) -> None:
    response = httpx.post(inference.url + CHAT, json=payload, timeout=120)
    _check(response)
    if response.status_code == 200 and not payload.get("stream"):
        assert response.json()["choices"]


@pytest.mark.parametrize("prompt", [[[]], [[-5]], [[10**12]], [[]] * 3, [""], ["a", 5], {"text": "x"}])
def test_completion_prompt_shapes(inference: ServerProcess, prompt) -> None:
    _check(httpx.post(inference.url + "/v1/completions", json={"prompt": prompt, "max_tokens": 2}, timeout=60))


def test_tokenize_garbage(inference: ServerProcess) -> None:
    for body in ({}, {"messages": "x"}, {"prompt": 5}, {"messages": [{"role": "user", "content": "\ud800"}]}):
        _check(httpx.post(inference.url + "/tokenize", content=json.dumps(body), timeout=30,
                          headers={"content-type": "application/json"}))


def test_server_still_healthy_afterwards(inference: ServerProcess) -> None:
    assert httpx.get(inference.url + "/health").json() == {"status": "ok"}
    reply = httpx.post(inference.url + CHAT, json={"messages": [{"role": "user", "content": "What is the capital of "
                                                                 "France?"}], "temperature": 0, "max_tokens": 12},
                       timeout=60)
    assert "Paris" in reply.json()["choices"][0]["message"]["content"]
