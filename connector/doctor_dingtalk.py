"""The connector doctor's DingTalk probes (connector/doctor.py runs them; `Check` is in connector/doctor_checks.py).

What each DingTalk probe does, and why it is harmless:

- token: `POST /v1.0/oauth2/accessToken` with the AppKey / AppSecret, as the connector does at start.
- Card.Instance.Write and the card template: `POST /v1.0/card/instances` creates one instance of
  card_template_id (outTrackId ``appliance-doctor-<random>``) with no open space and no delivery, so no one ever
  sees it. DingTalk has no call that reads whether a template exists and is usable by this app without making an
  instance, and an undelivered instance is the least a card call can leave behind: it stays on DingTalk, unseen,
  as every card does. A 403 names the missing permission; a template error names the template.
- Card.Streaming.Write: `PUT /v1.0/card/streaming` for a card that does not exist: DingTalk checks the
  permission first (403 ``AccessTokenPermissionDenied``), otherwise answers a parameter error. Nothing changes.
- qyapi_robot_sendmsg: `POST /v1.0/robot/oToMessages/batchSend` with an empty ``userIds`` list: there is nobody
  to send to; 403 when the permission is missing, else a parameter error (``robotCodeInvalid`` names a wrong
  robot_code).
- qyapi_get_member: the contact API's user detail (connector/dingtalk/directory.py) for a user id that does not
  exist: "not found" (60121) means the permission is there, 60011 that it is missing. A read.
- the Stream gateway: the handshake (connector/dingtalk/transport.py `open_connection`) returns a ticket that is
  never used (it expires after 90 s), then a TCP (and, for wss://, TLS) connection to the WebSocket endpoint is
  opened and closed without the WebSocket upgrade: an upgraded connection would be a live Stream connection, and
  DingTalk could hand it a user's message while the connector runs.
- the clock: the ``Date`` header of DingTalk's answers against this host's clock.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from typing import Any
from urllib.parse import urlparse

import httpx

from .dingtalk.directory import DingTalkDirectory
from .dingtalk.openapi import DingTalkAPI, DingTalkAPIError
from .dingtalk.transport import OPEN_CONNECTION, HandshakeError, open_connection
from .doctor_checks import CONSOLE, Check, check_clock, grant, single_try
from .settings import ConnectorSettings

CARD_INSTANCE, CARD_STREAMING = "Card.Instance.Write", "Card.Streaming.Write"
ROBOT_SEND, GET_MEMBER = "qyapi_robot_sendmsg", "qyapi_get_member"
NO_SUCH_USER = "appliance-doctor-no-such-user"


def needs_departments(settings: ConnectorSettings) -> bool:
    """Document access (the knowledge base's _access.toml rules) or department quotas use the contact API."""
    kb = settings.plugins.get("knowledge_base") or {}
    return bool(kb.get("enabled")) or bool(settings.quota_department_messages_per_day
                                           or settings.quota_department_tokens_per_day)


def _dingtalk_error(exc: DingTalkAPIError) -> str:
    return f"HTTP {exc.status} {exc.code}: {exc.message}" if exc.status else f"no answer ({exc.message})"


class DingTalk:
    """The DingTalk probes, on one HTTP client that notes the first `Date` header DingTalk sends."""

    def __init__(self, settings: ConnectorSettings, *, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.date: tuple[str, float] | None = None  # (DingTalk's Date header, this host's time when it came)
        self.http = httpx.AsyncClient(timeout=timeout_s, event_hooks={"response": [self._note_date]})
        self.api = DingTalkAPI(endpoint=settings.openapi_endpoint, client_id=settings.client_id,
                               client_secret=settings.client_secret.get_secret_value(), http=self.http,
                               card_qps=settings.card_qps, retry=single_try())
        self.timeout_s = timeout_s

    async def _note_date(self, response: httpx.Response) -> None:
        if self.date is None and response.headers.get("date"):
            self.date = (response.headers["date"], time.time())

    async def close(self) -> None:
        await self.http.aclose()

    async def run(self) -> list[Check]:
        token = await self.token()
        checks = [token]
        if token.status == "ok":
            checks += await self.card_instance()
            checks.append(await self.streaming())
            checks.append(await self.robot())
            checks.append(await self.contact())
        else:
            checks += [Check(name, "skip", "needs an access token") for name in
                       (f"permission {CARD_INSTANCE}", "card template", f"permission {CARD_STREAMING}",
                        f"permission {ROBOT_SEND}", f"permission {GET_MEMBER}")]
        checks.append(await self.gateway())
        checks.append(check_clock(*self.date) if self.date else
                      Check("clock", "skip" if token.status != "ok" else "warn", "DingTalk's answers carried no Date "
                            "header: the clock was not compared"))
        return checks

    async def token(self) -> Check:
        s = self.settings
        if not s.has_credentials:
            return Check("dingtalk token", "fail", "CONNECTOR_CLIENT_ID / CONNECTOR_CLIENT_SECRET are not set",
                         f"copy AppKey and AppSecret from {CONSOLE} > 凭证与基础信息 (credentials)")
        try:
            await self.api.token()
        except DingTalkAPIError as exc:
            if exc.status == 0 or exc.status >= 500:
                return Check("dingtalk token", "fail", f"{s.openapi_endpoint} did not give a token: "
                             f"{_dingtalk_error(exc)}", "check this host's DNS, proxy and firewall towards "
                             f"{s.openapi_endpoint} (HTTPS, port 443)")
            return Check("dingtalk token", "fail", f"DingTalk refused AppKey {s.client_id} with this AppSecret: "
                         f"{_dingtalk_error(exc)}", f"copy AppKey and AppSecret again from {CONSOLE} > "
                         "凭证与基础信息 (credentials) into CONNECTOR_CLIENT_ID / CONNECTOR_CLIENT_SECRET")
        return Check("dingtalk token", "ok", f"AppKey {s.client_id}: access token received")

    async def _probe(self, method: str, path: str, body: dict[str, Any]) -> DingTalkAPIError | None:
        try:
            await self.api.call(method, path, body, budgeted=False)
        except DingTalkAPIError as exc:
            return exc
        return None

    def _permission(self, scope: str, error: DingTalkAPIError | None, what: str) -> Check:
        name = f"permission {scope}"
        if error is not None and error.permission:
            return Check(name, "fail", f"missing: DingTalk refused {what} ({error.code})", grant(scope))
        if error is not None and (error.status == 0 or error.status >= 500):
            return Check(name, "fail", f"could not tell: {_dingtalk_error(error)}", "run the doctor again")
        return Check(name, "ok", "granted")

    async def card_instance(self) -> list[Check]:
        s = self.settings
        error = await self._probe("POST", "/v1.0/card/instances", {
            "cardTemplateId": s.card_template_id, "outTrackId": f"appliance-doctor-{uuid.uuid4().hex}",
            "cardData": {"cardParamMap": {"flowStatus": "1", s.card_content_key: ""}}})
        permission = self._permission(CARD_INSTANCE, error, "to create a card")
        if permission.status != "ok":
            return [permission, Check("card template", "skip", f"needs {CARD_INSTANCE}")]
        if error is None:
            return [permission, Check("card template", "ok", f"{s.card_template_id} is usable")]
        fix = ("create or publish the template in DingTalk's card platform (卡片平台) and give its id in "
               "card_template_id (CONNECTOR_CARD_TEMPLATE_ID); replies fall back to Markdown messages meanwhile")
        if error.template:
            return [permission, Check("card template", "fail", f"{s.card_template_id}: {error.message} "
                                      f"({error.code})", fix)]
        return [permission, Check("card template", "fail", f"DingTalk refused a card of {s.card_template_id}: "
                                  f"{_dingtalk_error(error)}", fix)]

    async def streaming(self) -> Check:
        error = await self._probe("PUT", "/v1.0/card/streaming", {
            "outTrackId": f"appliance-doctor-{uuid.uuid4().hex}", "guid": uuid.uuid4().hex,
            "key": self.settings.card_content_key, "content": "", "isFull": True})
        return self._permission(CARD_STREAMING, error, "to stream into a card")

    async def robot(self) -> Check:
        s = self.settings
        error = await self._probe("POST", "/v1.0/robot/oToMessages/batchSend", {
            "robotCode": s.robot, "userIds": [], "msgKey": "sampleText", "msgParam": '{"content": ""}'})
        if error is not None and "robotcode" in error.code.lower():
            return Check(f"permission {ROBOT_SEND}", "fail", f"robot_code {s.robot} is not this app's robot "
                         f"({error.code})", f"set CONNECTOR_ROBOT_CODE to the RobotCode in {CONSOLE} > 机器人 "
                         "(robot), or leave it unset when it is the AppKey")
        return self._permission(ROBOT_SEND, error, "a robot message")

    async def contact(self) -> Check:
        name, needed = f"permission {GET_MEMBER}", needs_departments(self.settings)
        directory = DingTalkDirectory(self.api, self.settings.oapi, self.http, timeout_s=self.timeout_s)
        try:
            await directory.departments(NO_SUCH_USER)
        except DingTalkAPIError as exc:
            if exc.permission:
                why = ("document access (the knowledge base's _access.toml) and department quotas need each "
                       "asker's departments" if needed else "askers' departments stay unknown (audit records "
                       "carry none; needed once document access or department quotas are on)")
                return Check(name, "fail" if needed else "warn", f"missing (成员信息读权限): {why}",
                             grant(GET_MEMBER))
            return Check(name, "fail" if needed else "warn", f"could not tell: {_dingtalk_error(exc)}",
                         f"check that {self.settings.oapi} is reachable")
        return Check(name, "ok", "granted" + ("" if needed else " (not needed by this configuration)"))

    async def gateway(self) -> Check:
        s = self.settings
        credentials = {"clientId": s.client_id, "clientSecret": s.client_secret.get_secret_value()}
        try:
            answer = await open_connection(self.http, s.openapi_endpoint.rstrip("/") + OPEN_CONNECTION, credentials,
                                           timeout_s=s.stream_handshake_timeout_s)
        except HandshakeError as exc:
            return Check("stream gateway", "fail", str(exc), "check AppKey / AppSecret, that the app's robot "
                         f"uses Stream mode ({CONSOLE} > 机器人: 消息接收模式 Stream模式), and the way out to "
                         f"{s.openapi_endpoint}")
        endpoint = urlparse(str(answer["endpoint"]))
        secure = endpoint.scheme == "wss"
        host, port = endpoint.hostname or "", endpoint.port or (443 if secure else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(
                host, port, ssl=ssl.create_default_context() if secure else None), s.stream_handshake_timeout_s)
            writer.close()
            await writer.wait_closed()
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            return Check("stream gateway", "fail", f"handshake answered, but the WebSocket endpoint {host}:{port} "
                         f"is not reachable ({type(exc).__name__})", f"allow outbound TCP {port} to {host} "
                         "(firewall, proxy)")
        return Check("stream gateway", "ok", f"handshake answered; {endpoint.scheme}://{host}:{port} reachable")
