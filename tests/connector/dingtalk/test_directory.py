"""The DingTalk directory client against the emulator's contact API (/topapi/v2/user/get), over real HTTP:
departments, unknown users, the token check, the missing permission, retries."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from connector.core.retry import RetryPolicy
from connector.dingtalk.directory import PERMISSION, USER_GET, DingTalkDirectory
from connector.dingtalk.openapi import DingTalkAPI, DingTalkAPIError

from ..sandbox.helpers import new_app


@pytest.fixture
async def control(emulator):
    """The emulator's control API."""
    async with httpx.AsyncClient(base_url=emulator.url) as http:
        yield http


async def set_directory(control: httpx.AsyncClient, users: dict[str, list[int]], app: str | None = None) -> None:
    (await control.post("/sandbox/directory", json={"users": users, "app": app})).raise_for_status()


async def user_get_calls(control: httpx.AsyncClient) -> list[dict]:
    return (await control.get("/sandbox/calls", params={"path": USER_GET})).json()


@pytest.fixture
async def client(emulator):
    app = new_app(emulator)
    calls: list[tuple[str, str]] = []
    async with httpx.AsyncClient() as http:
        api = DingTalkAPI(endpoint=emulator.url, client_id=app[0], client_secret=app[1], http=http, card_qps=20,
                          retry=RetryPolicy(attempts=3, factor=1.5, base_delay_s=0.01, max_delay_s=0.1, jitter=0))
        yield app, DingTalkDirectory(api, emulator.url, http, on_call=lambda a, o: calls.append((a, o))), calls


async def test_departments_of_a_member_and_none_for_a_stranger(control, client) -> None:
    app, directory, calls = client
    await set_directory(control, {"dir-ann": [101, 202]})
    await set_directory(control, {"dir-bob": [303]}, app=app[0])  # this app's own view wins for its users
    assert await directory.departments("dir-ann") == ("101", "202")
    assert await directory.departments("dir-bob") == ("303",)
    assert await directory.departments("dir-nobody") == ()  # errcode 60121: not a member
    assert calls == [(USER_GET, "ok")] * 3
    logged = await user_get_calls(control)
    assert logged[-3]["app"] == app[0] and logged[-3]["body"] == {"userid": "dir-ann", "language": "zh_CN"}
    assert logged[-3]["answer"]["result"]["dept_id_list"] == [101, 202]


async def test_an_expired_token_is_refreshed_once(control, client) -> None:
    _, directory, calls = client
    await set_directory(control, {"dir-cat": [7]})
    assert await directory.departments("dir-cat") == ("7",)
    (await control.post("/sandbox/tokens/expire")).raise_for_status()
    assert await directory.departments("dir-cat") == ("7",)
    assert [c["answer"]["errcode"] for c in (await user_get_calls(control))[-2:]] == [40014, 0]
    assert calls == [(USER_GET, "ok")] * 2


async def test_a_missing_permission_is_an_error_naming_it_logged_once(control, client, caplog) -> None:
    app, directory, calls = client
    await control.post("/sandbox/apps", json={"client_id": app[0], "scopes": ["Card.Instance.Write"]})
    with caplog.at_level(logging.ERROR, logger="connector.dingtalk.directory"):
        for _ in range(2):
            with pytest.raises(DingTalkAPIError) as raised:
                await directory.departments("dir-ann")
            assert raised.value.permission and raised.value.required_scopes == [PERMISSION]
    errors = [r for r in caplog.records if PERMISSION in r.getMessage()]
    assert len(errors) == 1 and "成员信息读权限" in errors[0].getMessage()
    assert calls == [(USER_GET, "permission")] * 2  # never retried


async def test_a_busy_server_is_retried(control, client) -> None:
    _, directory, calls = client
    await set_directory(control, {"dir-dan": [9]})
    await control.post("/sandbox/faults", json={"api": USER_GET, "status": 503, "count": 2})
    try:
        assert await directory.departments("dir-dan") == ("9",)
    finally:
        await control.delete("/sandbox/faults")
    assert calls == [(USER_GET, "server"), (USER_GET, "server"), (USER_GET, "ok")]


async def test_the_control_api_validates_the_directory(control) -> None:
    r = await control.post("/sandbox/directory", json={"users": {"x": ["not a number"]}})
    assert r.status_code == 422
    r = await control.post("/sandbox/directory", json={"users": {}, "app": "no-such-app"})
    assert r.status_code == 404


async def test_a_burst_of_new_users_stays_within_the_qps_limit(control, client) -> None:
    app, directory, _ = client
    users = {f"dir-burst-{n}": [n] for n in range(45)}
    await set_directory(control, users, app=app[0])
    found = await asyncio.gather(*(directory.departments(user) for user in users))
    assert found == [(str(n),) for n in range(45)]
    times = sorted(c["time"] for c in await user_get_calls(control) if c["app"] == app[0])
    assert len(times) == 45  # no call refused by the emulator's limit (20 per second), none retried
    assert max(sum(1 for t in times if start <= t < start + 1.0) for start in times) <= 20
