"""DingTalk's staff directory: a user's departments from the contact API (the `Directory` of core/identity.py).

`POST {oapi}/topapi/v2/user/get?access_token=...` with `{"userid": ..., "language": "zh_CN"}` answers HTTP 200
with `{"errcode": 0, "result": {"dept_id_list": [...]}}`; it needs the app permission `qyapi_get_member`
(成员信息读权限). It lives on the old-style host (oapi.dingtalk.com, settings.oapi_endpoint) and takes the same
internal-app access token as the new-style OpenAPI, passed as a query parameter (the token comes from
DingTalkAPI.token()). Errors come as a non-zero errcode in an HTTP 200 body: a missing permission (60011, or
errcode 88 with sub_code 60011) is logged once as an error naming the permission; an unknown user (60121) has
no departments; a rejected token (40014, 42001) is refreshed once; system busy (-1), QPS limits, 5xx and network
errors are retried with the shared policy. Calls keep under `qps` per second in any one-second window (DingTalk
limits each app per API; the emulator at 20). Facts and sources: docs/dingtalk-protocol-facts.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx

from ..core.ratelimit import TokenBucket
from ..core.retry import parse_retry_after
from .openapi import DingTalkAPI, DingTalkAPIError, json_body

log = logging.getLogger("connector.dingtalk.directory")

USER_GET = "/topapi/v2/user/get"
PERMISSION = "qyapi_get_member"
NO_PERMISSION = {"60011", "88"}  # 88 carries sub_code 60011 on some gateways
UNKNOWN_USER = "60121"
BAD_TOKEN = {"40014", "42001", "40001"}
BUSY = {"-1", "90002"}  # system busy
QPS_LIMITED = "90018"  # the app's QPS limit: retried after the window, and the bucket slows down


class DingTalkDirectory:
    def __init__(self, api: DingTalkAPI, oapi_endpoint: str, http: httpx.AsyncClient, *,
                 on_call: Callable[[str, str], None] | None = None, timeout_s: float = 5.0,
                 qps: float = 20.0) -> None:
        self.api, self.endpoint, self.http = api, oapi_endpoint.rstrip("/"), http
        burst = max(1.0, qps * 0.2)  # burst + refill per second stays within qps, as for the card budget
        self.bucket = TokenBucket(rate=max(0.5, qps * 0.95 - burst), capacity=burst)
        self._on_call = on_call or (lambda api, outcome: None)
        self.timeout_s = timeout_s
        self._reported = False

    async def departments(self, user_id: str) -> tuple[str, ...]:
        refreshed = False

        async def attempt() -> tuple[str, ...]:
            nonlocal refreshed
            while True:
                await self.bucket.acquire()  # every attempt counts against the limit
                try:
                    token = await self.api.token()
                    r = await self.http.post(self.endpoint + USER_GET, params={"access_token": token},
                                             json={"userid": user_id, "language": "zh_CN"}, timeout=self.timeout_s)
                except DingTalkAPIError as exc:
                    self._on_call(USER_GET, exc.kind)
                    raise
                except httpx.HTTPError as exc:
                    self._on_call(USER_GET, "network")
                    raise DingTalkAPIError(0, "network", type(exc).__name__) from exc
                body = json_body(r)
                code = str(body.get("errcode", r.status_code if r.status_code != 200 else "invalid"))
                if r.status_code == 200 and code == "0":
                    self._on_call(USER_GET, "ok")
                    result = body.get("result") or {}
                    return tuple(str(d) for d in result.get("dept_id_list") or ())
                if code == UNKNOWN_USER:  # not (or no longer) a member of the organisation
                    self._on_call(USER_GET, "ok")
                    log.debug("directory: %s is not a member (errcode %s)", user_id, code)
                    return ()
                if code in BAD_TOKEN and not refreshed:
                    refreshed = True
                    await self.api.token(refresh=True)
                    continue
                error = self._error(r, body, code)
                self._on_call(USER_GET, error.kind)
                if error.permission:
                    self._report_permission()
                if error.qps_limited:
                    self.bucket.slow_down()
                raise error

        return await self.api.retry.run(attempt)

    def _error(self, r: httpx.Response, body: dict[str, Any], code: str) -> DingTalkAPIError:
        message = str(body.get("errmsg") or body.get("message") or "")
        sub_code = str(body.get("sub_code") or "")
        if code in NO_PERMISSION and (code == "60011" or sub_code == "60011"):
            return DingTalkAPIError(403, code, message, [PERMISSION])
        if r.status_code != 200:  # a gateway error, or a fault the emulator injected
            return DingTalkAPIError(r.status_code, code, message, retry_after=parse_retry_after(
                r.headers.get("retry-after")))
        if code == QPS_LIMITED:
            return DingTalkAPIError(429, code, message or "QPS limit")
        if code in BUSY:
            return DingTalkAPIError(503, code, message or "system busy")
        return DingTalkAPIError(400, code, message)

    def _report_permission(self) -> None:
        if not self._reported:
            self._reported = True
            log.error("DingTalk refused %s: the app lacks the permission %s (成员信息读权限). Grant it in the "
                      "developer console (应用开发 > 权限管理) and publish the app again; until then askers have no "
                      "departments, so department-restricted knowledge-base folders stay closed to them.",
                      USER_GET, PERMISSION)
