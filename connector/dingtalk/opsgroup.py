"""The DingTalk ops group that alerts go to (connector/alerts.py's `OpsSender`), by one of two paths.

- `RobotGroupSender`: the app's own robot, through the robot group-send API
  (`POST /v1.0/robot/groupMessages/send`, `openConversationId`, msgKey sampleMarkdown; permission
  qyapi_robot_sendmsg), as replies.py's `_robot_send` does; the robot must be in the group.
- `CustomRobotSender`: a group's custom robot (自定义机器人) webhook, signed as DingTalk documents for the
  加签 security setting: sign = urlencode(base64(HMAC-SHA256(key=secret, msg=timestamp + "\\n" + secret)))
  with the timestamp in milliseconds, appended as `&timestamp=...&sign=...`; DingTalk refuses a bad sign or a
  timestamp more than an hour off with errcode 310000 (docs/dingtalk-protocol-facts.md).

Neither logs the webhook's access_token nor the secret: errors name the errcode and DingTalk's message."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from urllib.parse import quote_plus

import httpx

from .openapi import DingTalkAPI, json_body


class OpsGroupError(Exception):
    """The ops group did not take the message (the reason, without the webhook's token)."""


def sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's 加签 signature, url-encoded, for `&sign=`."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode())


def signed_url(webhook_url: str, secret: str | None, now_s: float | None = None) -> str:
    """The webhook URL with `&timestamp=...&sign=...` when the robot has a signing secret."""
    if not secret:
        return webhook_url
    timestamp = int((time.time() if now_s is None else now_s) * 1000)
    separator = "&" if "?" in webhook_url else "?"
    return f"{webhook_url}{separator}timestamp={timestamp}&sign={sign(secret, timestamp)}"


class RobotGroupSender:
    def __init__(self, api: DingTalkAPI, robot_code: str, conversation_id: str) -> None:
        self.api, self.robot_code, self.conversation_id = api, robot_code, conversation_id

    async def send(self, title: str, markdown: str) -> None:
        await self.api.call("POST", "/v1.0/robot/groupMessages/send", {
            "robotCode": self.robot_code, "openConversationId": self.conversation_id, "msgKey": "sampleMarkdown",
            "msgParam": json.dumps({"title": title, "text": markdown}, ensure_ascii=False)})


class CustomRobotSender:
    def __init__(self, http: httpx.AsyncClient, webhook_url: str, secret: str | None,
                 timeout_s: float = 10.0) -> None:
        self.http, self._url, self._secret, self.timeout_s = http, webhook_url, secret, timeout_s

    async def send(self, title: str, markdown: str) -> None:
        body = {"msgtype": "markdown", "markdown": {"title": title, "text": markdown}}
        try:
            r = await self.http.post(signed_url(self._url, self._secret), json=body, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise OpsGroupError(f"custom robot webhook unreachable: {type(exc).__name__}") from None
        answer = json_body(r)
        if r.status_code != 200 or answer.get("errcode") != 0:
            errcode = answer.get("errcode")
            errmsg = str(answer.get("errmsg", ""))[:200]
            raise OpsGroupError(f"custom robot webhook refused the message: HTTP {r.status_code}, errcode "
                                f"{errcode} {errmsg}".rstrip())
