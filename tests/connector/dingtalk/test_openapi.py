"""The DingTalk OpenAPI client (connector/dingtalk/openapi.py) in-process against the emulator's real HTTP server:
the access token, the retry policy, typed errors, the app-wide card budget and the session webhook."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import httpx
import pytest

from connector.dingtalk.openapi import DingTalkAPI, DingTalkAPIError
from connector.sandbox import SANDBOX_AI_CARD_TEMPLATE

from ...servers import free_port
from ..sandbox.helpers import new_app, send
from .helpers import Waits, add_fault, calls_of, control, dingtalk_api, fast_retry

TOKEN = "/v1.0/oauth2/accessToken"
BATCH_SEND = "/v1.0/robot/oToMessages/batchSend"
CREATE_CARD = "/v1.0/card/instances/createAndDeliver"
STREAM = "/v1.0/card/streaming"


def _robot_text(client_id: str, text: str = "hello") -> dict:
    return {"robotCode": client_id, "userIds": ["staff001"], "msgKey": "sampleText",
            "msgParam": f'{{"content": "{text}"}}'}


def _card(out_track_id: str) -> dict:
    return {"cardTemplateId": SANDBOX_AI_CARD_TEMPLATE, "outTrackId": out_track_id,
            "cardData": {"cardParamMap": {"flowStatus": "1", "msgContent": ""}}, "userIdType": 1,
            "openSpaceId": "dtv1.card//IM_ROBOT.staff001", "imRobotOpenDeliverModel": {"spaceType": "IM_ROBOT"}}


async def test_the_token_is_fetched_once_and_reused(emulator, http, app) -> None:
    outcomes: list[tuple[str, str]] = []
    api = dingtalk_api(emulator, http, *app, outcomes=outcomes)
    first = await api.token()
    assert await api.token() == first
    await asyncio.gather(*(api.call("POST", BATCH_SEND, _robot_text(app[0], f"m{i}")) for i in range(3)))
    assert len(calls_of(emulator, app[0], TOKEN)) == 1
    assert outcomes == [(BATCH_SEND, "ok")] * 3
    assert await api.token(refresh=True) != first
    assert len(calls_of(emulator, app[0], TOKEN)) == 2


async def test_an_expired_token_is_refreshed_without_spending_an_attempt(emulator, http, app) -> None:
    api = dingtalk_api(emulator, http, *app, retry=fast_retry(attempts=1))
    since = time.time()
    await api.call("POST", BATCH_SEND, _robot_text(app[0]))
    control(emulator, "POST", "/sandbox/tokens/expire")
    assert await api.call("POST", BATCH_SEND, _robot_text(app[0], "again")) is not None
    calls = calls_of(emulator, None, BATCH_SEND, since=since)
    # one try, the 401 (an unknown token: the emulator cannot tell the app), the same try with the new token
    assert [(c["status"], c["app"]) for c in calls] == [(200, app[0]), (401, None), (200, app[0])]
    assert len(calls_of(emulator, app[0], TOKEN)) == 2


async def test_a_wrong_secret_is_a_clear_error_that_names_no_secret(emulator, http, app) -> None:
    secret = "wrong-" + uuid.uuid4().hex
    api = dingtalk_api(emulator, http, app[0], secret)
    with pytest.raises(DingTalkAPIError) as caught:
        await api.call("POST", BATCH_SEND, _robot_text(app[0]))
    error = caught.value
    assert (error.status, error.code, error.kind, error.retryable) == (400, "invalidClientIdOrSecret", "client", False)
    assert "cannot get an access token" in str(error)
    assert secret not in str(error) and secret not in repr(error)
    assert calls_of(emulator, app[0], BATCH_SEND) == []


@pytest.mark.usefixtures("faults")
async def test_5xx_is_retried_until_the_attempts_are_spent(emulator, http, app) -> None:
    waits = Waits()
    outcomes: list[tuple[str, str]] = []
    api = dingtalk_api(emulator, http, *app, retry=fast_retry(attempts=3, sleep=waits), outcomes=outcomes)
    add_fault(emulator, BATCH_SEND, status=503, count=2)
    await api.call("POST", BATCH_SEND, _robot_text(app[0]))
    assert [c["status"] for c in calls_of(emulator, app[0], BATCH_SEND)] == [503, 503, 200]
    assert outcomes == [(BATCH_SEND, "server"), (BATCH_SEND, "server"), (BATCH_SEND, "ok")]
    assert waits.asked == [0.01, 0.015]  # base delay, then times the factor (no jitter here)

    add_fault(emulator, BATCH_SEND, status=500, count=3)
    with pytest.raises(DingTalkAPIError) as caught:
        await api.call("POST", BATCH_SEND, _robot_text(app[0]))
    assert (caught.value.status, caught.value.kind, caught.value.retryable) == (500, "server", True)
    assert [c["status"] for c in calls_of(emulator, app[0], BATCH_SEND)][3:] == [500, 500, 500]


class _RetryAfterOn429(httpx.AsyncBaseTransport):
    """Adds a Retry-After header to the emulator's 429 answers (its injected faults carry none)."""

    def __init__(self, seconds: str) -> None:
        self.seconds, self.inner = seconds, httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if response.status_code == 429:
            response.headers["Retry-After"] = self.seconds
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.usefixtures("faults")
async def test_429_and_qps_403_are_retried_honouring_retry_after(emulator, app) -> None:
    waits = Waits()
    async with httpx.AsyncClient(transport=_RetryAfterOn429("2")) as http:
        api = dingtalk_api(emulator, http, *app, retry=fast_retry(attempts=3, sleep=waits, max_delay_s=5.0))
        add_fault(emulator, BATCH_SEND, status=429, code="Throttling", count=1)
        add_fault(emulator, BATCH_SEND, status=403, code="Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", count=1)
        await api.call("POST", BATCH_SEND, _robot_text(app[0]))
    assert [c["status"] for c in calls_of(emulator, app[0], BATCH_SEND)] == [429, 403, 200]
    assert waits.asked == [2.0, 1.0]  # the server's Retry-After, then DingTalk's one-second QPS window

    waits.asked.clear()
    async with httpx.AsyncClient(transport=_RetryAfterOn429("600")) as http:
        api = dingtalk_api(emulator, http, *app, retry=fast_retry(attempts=2, sleep=waits, max_delay_s=5.0))
        add_fault(emulator, BATCH_SEND, status=429, code="Throttling", count=1)
        await api.call("POST", BATCH_SEND, _robot_text(app[0]))
    assert waits.asked == [5.0]  # never longer than retry_max_delay_s


async def test_a_permission_error_names_the_scope_and_is_not_retried(emulator, http, caplog) -> None:
    client_id, secret = new_app(emulator, scopes=["Card.Streaming.Write", "qyapi_robot_sendmsg"])
    outcomes: list[tuple[str, str]] = []
    api = dingtalk_api(emulator, http, client_id, secret, outcomes=outcomes)
    with caplog.at_level(logging.ERROR, logger="connector.dingtalk.api"):
        for _ in range(2):
            with pytest.raises(DingTalkAPIError) as caught:
                await api.call("POST", CREATE_CARD, _card(uuid.uuid4().hex))
    error = caught.value
    assert error.permission and error.kind == "permission" and not error.retryable
    assert error.required_scopes == ["Card.Instance.Write"] and error.status == 403
    assert len(calls_of(emulator, client_id, CREATE_CARD)) == 2  # one attempt each: never retried
    assert outcomes == [(CREATE_CARD, "permission")] * 2
    logged = [r.getMessage() for r in caplog.records if r.name == "connector.dingtalk.api"]
    assert len(logged) == 1, logged  # named once, not at every call
    assert "Card.Instance.Write" in logged[0] and "权限管理" in logged[0]


async def test_network_errors_are_typed_and_retried(http) -> None:
    class Nowhere:
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    waits = Waits()
    api = dingtalk_api(Nowhere, http, "app", "secret", retry=fast_retry(attempts=3, sleep=waits))
    with pytest.raises(DingTalkAPIError) as caught:
        await api.call("POST", BATCH_SEND, {})
    assert (caught.value.status, caught.value.kind, caught.value.retryable) == (0, "network", True)
    assert len(waits.asked) == 2


async def test_card_calls_stay_within_the_app_wide_budget(emulator, http) -> None:
    """Fourteen card updates at once against an app allowed 10 calls per second per API: none is refused."""
    client_id, secret = new_app(emulator, qps_limit=10)
    api = dingtalk_api(emulator, http, client_id, secret, card_qps=10, retry=fast_retry(attempts=1))
    out_track_id = uuid.uuid4().hex
    await api.call("POST", CREATE_CARD, _card(out_track_id))
    started = time.monotonic()
    await asyncio.gather(*(api.call("PUT", STREAM, {
        "outTrackId": out_track_id, "guid": uuid.uuid4().hex, "key": "msgContent", "content": f"text {i}",
        "isFull": True, "isFinalize": False, "isError": False}) for i in range(14)))
    elapsed = time.monotonic() - started
    stamps = sorted(c["time"] for c in calls_of(emulator, client_id, STREAM))
    assert len(stamps) == 14 and all(c["status"] == 200 for c in calls_of(emulator, client_id, STREAM))
    busiest = max(sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps)
    assert busiest <= 10 and elapsed >= 0.5  # spread over time rather than refused

    unbudgeted = dingtalk_api(emulator, http, client_id, secret, card_qps=1000, retry=fast_retry(attempts=1))
    results = await asyncio.gather(*(unbudgeted.call("PUT", STREAM, {
        "outTrackId": out_track_id, "guid": uuid.uuid4().hex, "key": "msgContent", "content": "x", "isFull": True,
        "isFinalize": False, "isError": False}) for _ in range(25)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, DingTalkAPIError)]
    assert refused and all(r.qps_limited and r.kind == "qps" for r in refused)  # the emulator does enforce it


async def test_two_replicas_of_one_app_settle_within_its_limit(emulator, http) -> None:
    """Two connectors of one app (replicas), each budgeted for the app's whole limit: after the first refusals
    each slows down, every call lands within the policy's three attempts, and refusals stay rare."""
    client_id, secret = new_app(emulator, qps_limit=10)
    replicas = [dingtalk_api(emulator, http, client_id, secret, card_qps=10, retry=fast_retry(attempts=3))
                for _ in range(2)]
    out_track_id = uuid.uuid4().hex
    await replicas[0].call("POST", CREATE_CARD, _card(out_track_id))

    async def updates(api: DingTalkAPI, n: int) -> None:
        for i in range(n):
            await api.call("PUT", STREAM, {"outTrackId": out_track_id, "guid": uuid.uuid4().hex, "key": "msgContent",
                                           "content": f"text {i}", "isFull": True, "isFinalize": False,
                                           "isError": False})

    await asyncio.gather(*(updates(api, 8) for api in replicas for _ in range(4)))  # 64 updates, 32 each
    statuses = [c["status"] for c in calls_of(emulator, client_id, STREAM)]
    assert statuses.count(200) == 64, statuses
    assert statuses.count(403) <= 12, statuses  # a few refusals teach each replica its share


@pytest.mark.usefixtures("faults")
async def test_the_session_webhook_post(emulator, http, app) -> None:
    pushed = send(emulator, app[0], "hi")
    webhook, conversation_id = pushed["data"]["sessionWebhook"], pushed["conversationId"]
    outcomes: list[tuple[str, str]] = []
    api = dingtalk_api(emulator, http, *app, outcomes=outcomes)
    body = {"msgtype": "markdown", "markdown": {"title": "T", "text": "**answer**"}}
    add_fault(emulator, "/robot/sendBySession", status=502, count=1)
    assert await api.post_webhook(webhook, body) == {"errcode": 0, "errmsg": "ok"}  # the 502 was retried
    replies = control(emulator, "GET", "/sandbox/replies", params={"conversation_id": conversation_id})
    assert [(r["via"], r["content"]["text"]) for r in replies] == [("sessionWebhook", "**answer**")]

    control(emulator, "POST", "/sandbox/webhooks/expire")
    refused = await api.post_webhook(webhook, body)  # an answer, not an exception: the caller picks another path
    assert refused["errcode"] == 300001
    assert outcomes == [("sessionWebhook", "server"), ("sessionWebhook", "ok"), ("sessionWebhook", "client")]
