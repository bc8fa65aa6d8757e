"""The one retry policy: attempts in all, delays, Retry-After, non-retryable errors, the reconnect backoff."""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import replace

import httpx
import openai
import pytest

from connector.core.model import ModelClient, model_error
from connector.core.retry import RetryPolicy, parse_retry_after
from connector.dingtalk.openapi import DingTalkAPI, DingTalkAPIError
from connector.settings import ConnectorSettings
from connector.skills.base import ModelError


class Flaky(Exception):
    def __init__(self, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__("flaky")
        self.retryable, self.retry_after = retryable, retry_after


class Sleeps(list[float]):
    """The fake sleep: records each wait instead of waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def policy(sleeps: Sleeps, **changes: float) -> RetryPolicy:
    values = {"attempts": 3, "factor": 1.5, "base_delay_s": 1.0, "max_delay_s": 10.0, "jitter": 0.0, **changes}
    return RetryPolicy(**values, sleep=sleeps)  # type: ignore[arg-type]


def failing(errors: list[Exception], result: str = "ok"):
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return call, calls


def test_built_from_the_settings() -> None:
    s = ConnectorSettings(retry_attempts=4, retry_backoff_factor=2.0, retry_base_delay_s=0.5, retry_max_delay_s=7.0)
    p = RetryPolicy.from_settings(s)
    assert (p.attempts, p.factor, p.base_delay_s, p.max_delay_s) == (4, 2.0, 0.5, 7.0)
    defaults = RetryPolicy.from_settings(ConnectorSettings())
    assert (defaults.attempts, defaults.factor) == (3, 1.5)  # the seeds' max_attempts: 3, backoff_factor 1.5


async def test_attempts_are_counted_in_all_and_the_last_error_is_raised() -> None:
    sleeps = Sleeps()
    last = Flaky()
    call, calls = failing([Flaky(), Flaky(), last, Flaky()])
    with pytest.raises(Flaky) as raised:
        await policy(sleeps).run(call)
    assert raised.value is last
    assert len(calls) == 3 and len(sleeps) == 2  # one try and two retries


async def test_success_after_retries_returns_the_value() -> None:
    sleeps = Sleeps()
    call, calls = failing([Flaky(), Flaky()], result="answer")
    assert await policy(sleeps).run(call) == "answer"
    assert len(calls) == 3


async def test_delays_grow_by_the_factor_and_stop_at_the_maximum() -> None:
    sleeps = Sleeps()
    call, _ = failing([Flaky()] * 6)
    await policy(sleeps, attempts=7, max_delay_s=4.0).run(call)
    assert sleeps == pytest.approx([1.0, 1.5, 2.25, 3.375, 4.0, 4.0])


async def test_jitter_spreads_each_delay_within_its_band() -> None:
    p = RetryPolicy(attempts=3, factor=1.5, base_delay_s=0.3, max_delay_s=10.0, jitter=0.2)
    for retry, nominal in ((1, 0.3), (2, 0.45)):
        delays = [p.delay(retry) for _ in range(200)]
        assert all(0.8 * nominal <= d <= 1.2 * nominal for d in delays)
        assert max(delays) - min(delays) > 0.1 * nominal  # they do vary
    low = RetryPolicy(3, 1.5, 0.3, 10.0, 0.2, uniform=lambda a, b: a)
    high = RetryPolicy(3, 1.5, 0.3, 10.0, 0.2, uniform=lambda a, b: b)
    assert (low.delay(2), high.delay(2)) == pytest.approx((0.36, 0.54))


async def test_retry_after_is_honoured_and_capped() -> None:
    sleeps = Sleeps()
    call, _ = failing([Flaky(retry_after=2.5), Flaky(retry_after=60.0)])
    assert await policy(sleeps, base_delay_s=0.1, max_delay_s=10.0).run(call) == "ok"
    assert sleeps == [2.5, 10.0]


async def test_non_retryable_errors_are_raised_at_once() -> None:
    sleeps = Sleeps()
    call, calls = failing([Flaky(retryable=False)])
    with pytest.raises(Flaky):
        await policy(sleeps).run(call)
    assert len(calls) == 1 and sleeps == []
    call, calls = failing([ValueError("not ours")])  # no `retryable` attribute: not retried
    with pytest.raises(ValueError):
        await policy(sleeps).run(call)
    assert len(calls) == 1 and sleeps == []


async def test_a_custom_retryable_test() -> None:
    sleeps = Sleeps()
    call, calls = failing([KeyError("a"), KeyError("b")])
    assert await policy(sleeps).run(call, retryable=lambda e: isinstance(e, KeyError)) == "ok"
    assert len(calls) == 3


def test_the_reconnect_backoff_doubles_is_capped_and_resets() -> None:
    settings = ConnectorSettings(reconnect_max_backoff_s=300.0)
    top = replace(RetryPolicy.reconnect(settings), uniform=lambda a, b: b)
    delays = top.backoff()
    first = [next(delays) for _ in range(12)]
    assert first[:9] == pytest.approx([1, 2, 4, 8, 16, 32, 64, 128, 256])  # upper ends: 1 s doubling
    assert first[9:] == pytest.approx([300, 300, 300])  # capped at reconnect_max_backoff_s
    delays.reset()  # after a stable connection
    assert next(delays) == pytest.approx(1.0)
    lows = replace(top, uniform=lambda a, b: a).backoff()
    assert [next(lows) for _ in range(12)][::3] == pytest.approx([0.5, 4, 32, 150])  # the lower half of each band
    real = RetryPolicy.reconnect(settings).backoff()
    assert all(0 < next(real) <= 300 for _ in range(1000))  # never past the cap, however long it fails


def test_retry_after_header_parsing() -> None:
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("-4") == 0.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after(later) <= 31  # type: ignore[operator]


def test_errors_say_whether_they_are_retryable() -> None:
    request = httpx.Request("POST", "http://model/v1/chat/completions")
    full = openai.RateLimitError("full", response=httpx.Response(429, headers={"retry-after": "2"}, request=request),
                                 body=None)
    bad = openai.BadRequestError("bad", response=httpx.Response(400, request=request), body=None)
    assert model_error(full).retryable and model_error(full).retry_after == 2.0
    assert not model_error(bad).retryable
    assert model_error(openai.APIConnectionError(request=request)).retryable
    assert DingTalkAPIError(429, "Throttling", "").retryable
    assert DingTalkAPIError(403, "Forbidden.QpsLimitForAppkeyAndApi", "").retryable
    assert DingTalkAPIError(503, "server", "").retryable and DingTalkAPIError(0, "network", "").retryable
    assert not DingTalkAPIError(403, "Forbidden.AccessDenied.AccessTokenPermissionDenied", "").retryable
    assert not DingTalkAPIError(400, "param.templateUnpublished", "").retryable


async def test_openapi_calls_use_the_policy_and_the_server_retry_after() -> None:
    """Through DingTalkAPI with a fake HTTP server: 429 with Retry-After, then 503, then success."""
    answers = [httpx.Response(429, json={"code": "Throttling", "message": "slow down"}, headers={"Retry-After": "1"}),
               httpx.Response(503, json={"code": "ServiceUnavailable"}), httpx.Response(200, json={"ok": True})]
    outcomes: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1.0/oauth2/accessToken":
            return httpx.Response(200, json={"accessToken": "t", "expireIn": 7200})
        return answers.pop(0)

    sleeps = Sleeps()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        api = DingTalkAPI(endpoint="http://dingtalk", client_id="id", client_secret="secret", http=http,
                          card_qps=1000, retry=policy(sleeps, base_delay_s=0.2),
                          on_call=lambda api, outcome: outcomes.append(outcome))
        assert await api.call("PUT", "/v1.0/card/streaming", {}) == {"ok": True}
        assert sleeps == pytest.approx([1.0, 0.3]) and outcomes == ["qps", "server", "ok"]
        answers[:] = [httpx.Response(403, json={"code": "Forbidden.AccessDenied.AccessTokenPermissionDenied",
                                                "accessdenieddetail": {"requiredScopes": ["Card.Streaming.Write"]}})]
        with pytest.raises(DingTalkAPIError) as refused:
            await api.call("PUT", "/v1.0/card/streaming", {})
        assert refused.value.permission and len(sleeps) == 2  # not retried


async def test_the_model_client_retries_by_the_policy() -> None:
    """503, then 429 with Retry-After, then a stream; a 400 is not retried; 503s past the attempts give up."""
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
    stream = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
    answers: list[httpx.Response] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    sleeps = Sleeps()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = ModelClient("http://model/v1", "key", http, model="m", temperature=0, max_tokens=8, timeout_s=5,
                             connect_timeout_s=1, retry=policy(sleeps, base_delay_s=0.5))
        answers[:] = [httpx.Response(503, json={}), httpx.Response(429, json={}, headers={"retry-after": "3"}),
                      httpx.Response(200, text=stream, headers={"content-type": "text/event-stream"})]
        assert [d async for d in client.stream_chat([{"role": "user", "content": "x"}])] == ["hi"]
        assert sleeps == [0.5, 3.0]
        answers[:] = [httpx.Response(400, json={"error": {"message": "bad"}})]
        with pytest.raises(ModelError, match="HTTP 400"):
            [d async for d in client.stream_chat([{"role": "user", "content": "x"}])]
        assert len(sleeps) == 2
        answers[:] = [httpx.Response(503, json={}) for _ in range(3)]
        with pytest.raises(ModelError, match="HTTP 503"):
            [d async for d in client.stream_chat([{"role": "user", "content": "x"}])]
        assert sleeps[2:] == [0.5, 0.75] and answers == []
