"""The DingTalk directory client against the emulator's contact API (/topapi/v2/user/get), over real HTTP:
departments, unknown users, the token check, the missing permission, retries."""

from __future__ import annotations

import logging

import httpx
import pytest

from connector.core.retry import RetryPolicy
from connector.dingtalk.directory import PERMISSION, USER_GET, DingTalkDirectory
from connector.dingtalk.openapi import DingTalkAPI, DingTalkAPIError

from ..sandbox.helpers import new_app


def set_directory(emulator, users: dict[str, list[int]], app: str | None = None) -> None:
    httpx.post(emulator.url + "/sandbox/directory", json={"users": users, "app": app}).raise_for_status()


@pytest.fixture
async def client(emulator):
    app = new_app(emulator)
    calls: list[tuple[str, str]] = []
    async with httpx.AsyncClient() as http:
        api = DingTalkAPI(endpoint=emulator.url, client_id=app[0], client_secret=app[1], http=http, card_qps=20,
                          retry=RetryPolicy(attempts=3, factor=1.5, base_delay_s=0.01, max_delay_s=0.1, jitter=0))
        yield app, DingTalkDirectory(api, emulator.url, http, on_call=lambda a, o: calls.append((a, o))), calls


async def test_departments_of_a_member_and_none_for_a_stranger(emulator, client) -> None:
    app, directory, calls = client
    set_directory(emulator, {"dir-ann": [101, 202]})
    set_directory(emulator, {"dir-bob": [303]}, app=app[0])  # this app's own view wins for its users
    assert await directory.departments("dir-ann") == ("101", "202")
    assert await directory.departments("dir-bob") == ("303",)
    assert await directory.departments("dir-nobody") == ()  # errcode 60121: not a member
    assert calls == [(USER_GET, "ok")] * 3
    logged = httpx.get(emulator.url + "/sandbox/calls", params={"path": USER_GET}).json()
    assert logged[-3]["app"] == app[0] and logged[-3]["body"] == {"userid": "dir-ann", "language": "zh_CN"}
    assert logged[-3]["answer"]["result"]["dept_id_list"] == [101, 202]


async def test_an_expired_token_is_refreshed_once(emulator, client) -> None:
    _, directory, calls = client
    set_directory(emulator, {"dir-cat": [7]})
    assert await directory.departments("dir-cat") == ("7",)
    httpx.post(emulator.url + "/sandbox/tokens/expire").raise_for_status()
    assert await directory.departments("dir-cat") == ("7",)
    answers = [c["answer"]["errcode"] for c in httpx.get(emulator.url + "/sandbox/calls",
                                                         params={"path": USER_GET}).json()[-2:]]
    assert answers == [40014, 0]


async def test_a_missing_permission_is_an_error_naming_it_logged_once(emulator, client, caplog) -> None:
    app, directory, calls = client
    httpx.post(emulator.url + "/sandbox/apps", json={"client_id": app[0], "scopes": ["Card.Instance.Write"]})
    with caplog.at_level(logging.ERROR, logger="connector.dingtalk.directory"):
        for _ in range(2):
            with pytest.raises(DingTalkAPIError) as raised:
                await directory.departments("dir-ann")
            assert raised.value.permission and raised.value.required_scopes == [PERMISSION]
    errors = [r for r in caplog.records if PERMISSION in r.getMessage()]
    assert len(errors) == 1 and "成员信息读权限" in errors[0].getMessage()
    assert calls == [(USER_GET, "permission")] * 2  # never retried


async def test_a_busy_server_is_retried(emulator, client) -> None:
    _, directory, calls = client
    set_directory(emulator, {"dir-dan": [9]})
    httpx.post(emulator.url + "/sandbox/faults", json={"api": USER_GET, "status": 503, "count": 2})
    try:
        assert await directory.departments("dir-dan") == ("9",)
    finally:
        httpx.delete(emulator.url + "/sandbox/faults")
    assert calls == [(USER_GET, "server"), (USER_GET, "server"), (USER_GET, "ok")]


async def test_the_control_api_validates_the_directory(emulator) -> None:
    r = httpx.post(emulator.url + "/sandbox/directory", json={"users": {"x": ["not a number"]}})
    assert r.status_code == 422
    r = httpx.post(emulator.url + "/sandbox/directory", json={"users": {}, "app": "no-such-app"})
    assert r.status_code == 404
