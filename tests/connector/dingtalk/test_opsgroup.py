"""The ops group's two paths (connector/dingtalk/opsgroup.py) in-process against the emulator's real HTTP server:
the robot group-send API, and a group custom robot's webhook signed with 加签 (the emulator checks the signature
and the timestamp window as DingTalk does, errcode 310000)."""

from __future__ import annotations

import time
import uuid
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from connector.dingtalk.opsgroup import CustomRobotSender, OpsGroupError, RobotGroupSender, sign, signed_url

from .helpers import control, dingtalk_api


def test_sign_matches_dingtalks_documented_scheme() -> None:
    # printf '1577262236757\nthis is secret' | openssl dgst -sha256 -hmac 'this is secret' -binary | base64
    assert sign("this is secret", 1577262236757) == "hmPWwU%2B7lVdm3ZZz0r9tSfx0L4Q26jWOZr9%2BGs6EZQM%3D"
    url = signed_url("https://oapi.dingtalk.com/robot/send?access_token=abc", "this is secret", 1577262236.757)
    assert url == ("https://oapi.dingtalk.com/robot/send?access_token=abc&timestamp=1577262236757"
                   "&sign=hmPWwU%2B7lVdm3ZZz0r9tSfx0L4Q26jWOZr9%2BGs6EZQM%3D")
    assert signed_url("https://x/robot/send?access_token=abc", None) == "https://x/robot/send?access_token=abc"


def _timeline(emulator, conversation_id: str) -> list[dict]:
    return control(emulator, "GET", f"/sandbox/timeline/{conversation_id}")["items"]


def _robot(emulator, secret: str | None) -> tuple[str, str]:
    group = f"cidops{uuid.uuid4().hex[:10]}=="
    robot = control(emulator, "POST", "/sandbox/custom-robots", json={"conversation_id": group, "secret": secret})
    return group, robot["webhook"]


async def test_custom_robot_webhook_signed_lands_in_the_group(emulator, http: httpx.AsyncClient) -> None:
    group, webhook = _robot(emulator, "SECtest-secret-0123456789")
    await CustomRobotSender(http, webhook, "SECtest-secret-0123456789").send("运维告警", "### 🔥 firing\n- **X**")
    items = _timeline(emulator, group)
    assert [(i["via"], i["msgtype"], i["content"]["title"]) for i in items] == [("customRobot", "markdown", "运维告警")]
    assert items[0]["content"]["text"] == "### 🔥 firing\n- **X**"


async def test_custom_robot_refuses_a_wrong_secret_or_an_old_timestamp(emulator, http: httpx.AsyncClient) -> None:
    group, webhook = _robot(emulator, "SECright")
    with pytest.raises(OpsGroupError, match="errcode 310000 sign not match") as caught:
        await CustomRobotSender(http, webhook, "SECwrong").send("t", "x")
    assert parse_qs(urlparse(webhook).query)["access_token"][0] not in str(caught.value)  # never the token
    stale = signed_url(webhook, "SECright", time.time() - 3700)  # more than an hour old
    assert (await http.post(stale, json={"msgtype": "text", "text": {"content": "x"}})).json()["errcode"] == 310000
    unsigned = await http.post(webhook, json={"msgtype": "text", "text": {"content": "x"}})
    assert unsigned.json()["errcode"] == 310000
    assert _timeline(emulator, group) == []


async def test_custom_robot_without_signing_and_unknown_token(emulator, http: httpx.AsyncClient) -> None:
    group, webhook = _robot(emulator, None)
    await CustomRobotSender(http, webhook, None).send("t", "plain")
    assert [i["content"]["text"] for i in _timeline(emulator, group)] == ["plain"]
    with pytest.raises(OpsGroupError, match="errcode 300001"):
        await CustomRobotSender(http, emulator.url + "/robot/send?access_token=nope", None).send("t", "x")


async def test_custom_robot_limit_of_20_a_minute(emulator, http: httpx.AsyncClient) -> None:
    group, webhook = _robot(emulator, None)
    sender = CustomRobotSender(http, webhook, None)
    for n in range(20):
        await sender.send("t", f"m{n}")
    with pytest.raises(OpsGroupError, match="130101"):
        await sender.send("t", "one too many")
    assert len(_timeline(emulator, group)) == 20


async def test_robot_group_send_api(emulator, http: httpx.AsyncClient, app: tuple[str, str]) -> None:
    client_id, secret = app
    group = f"cidops{uuid.uuid4().hex[:10]}=="
    control(emulator, "POST", "/sandbox/custom-robots", json={"conversation_id": group})  # makes the group
    await RobotGroupSender(dingtalk_api(emulator, http, client_id, secret), client_id, group).send(
        "运维告警", "### ✅ resolved")
    items = _timeline(emulator, group)
    assert [(i["via"], i["msgtype"]) for i in items] == [("robot.groupMessages", "sampleMarkdown")]
    assert items[0]["content"] == {"title": "运维告警", "text": "### ✅ resolved"}
