"""DingTalk OpenAPI client: access token, the shared retry policy, app-wide card budget.

Calls follow ``core.retry.RetryPolicy`` (by default 3 attempts in all, that is one try
and two retries, backoff factor 1.5, honouring Retry-After). Retried: HTTP 429,
QPS-limit 403s, 5xx and network errors; a QPS refusal waits out DingTalk's one-second window before the retry
(unless the server names a Retry-After) and slows the app-wide budget down (``TokenBucket.slow_down``: replicas
of one app share DingTalk's limit and settle on their shares). Never retried: permission errors (logged
once, naming the missing scope), bad parameters, an unpublished template. A 401
refreshes the access token once per call, without spending an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..core.ratelimit import TokenBucket
from ..core.retry import RetryPolicy, parse_retry_after

log = logging.getLogger("connector.dingtalk.api")

QPS_WINDOW_S = 1.0  # DingTalk counts calls per app and API per second


class DingTalkAPIError(Exception):
    def __init__(self, status: int, code: str, message: str, required_scopes: list[str] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.required_scopes = required_scopes or []
        # seconds, when the server sent Retry-After; a QPS refusal without one waits for the next window
        self.retry_after = QPS_WINDOW_S if retry_after is None and self.qps_limited else retry_after

    @property
    def qps_limited(self) -> bool:
        return self.status == 429 or "QpsLimit" in self.code

    @property
    def retryable(self) -> bool:
        return self.qps_limited or self.status >= 500 or self.status == 0

    @property
    def permission(self) -> bool:
        return "PermissionDenied" in self.code or bool(self.required_scopes)

    @property
    def template(self) -> bool:
        return "template" in self.code.lower()

    @property
    def kind(self) -> str:
        if self.permission:
            return "permission"
        if self.qps_limited:
            return "qps"
        if self.status == 0:
            return "network"
        if self.status >= 500:
            return "server"
        if self.template:
            return "template"
        return "client"


class DingTalkAPI:
    def __init__(self, *, endpoint: str, client_id: str, client_secret: str, http: httpx.AsyncClient,
                 card_qps: float, retry: RetryPolicy, on_call: Callable[[str, str], None] | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._client_id = client_id
        self._secret = client_secret
        self._http = http
        # at most `card_qps` calls in any one-second window: burst + refill per second stays within the budget
        burst = max(1.0, card_qps * 0.2)
        self.bucket = TokenBucket(rate=max(0.5, card_qps * 0.95 - burst), capacity=burst)
        self.retry = retry
        self._token: str | None = None
        self._token_expiry = 0.0
        self._token_lock = asyncio.Lock()
        self._on_call = on_call or (lambda api, outcome: None)
        self._reported_scopes: set[str] = set()

    async def token(self, refresh: bool = False) -> str:
        async with self._token_lock:
            if not refresh and self._token and time.monotonic() < self._token_expiry:
                return self._token
            try:
                r = await self._http.post(self.endpoint + "/v1.0/oauth2/accessToken", timeout=10.0,
                                          json={"appKey": self._client_id, "appSecret": self._secret})
            except httpx.HTTPError as exc:
                raise DingTalkAPIError(0, "network", f"access token request failed: {type(exc).__name__}") from exc
            if r.status_code != 200:
                body = json_body(r)
                raise DingTalkAPIError(r.status_code, str(body.get("code", "token")),
                                       f"cannot get an access token: {body.get('message', r.status_code)}")
            body = r.json()
            self._token = body["accessToken"]
            self._token_expiry = time.monotonic() + int(body.get("expireIn", 7200)) - 300  # refresh 5 min early
            return self._token

    async def call(self, method: str, path: str, body: dict[str, Any], *, budgeted: bool = True,
                   urgent: bool = False) -> dict[str, Any]:
        """One OpenAPI call with the retry policy; card and robot calls draw on the app-wide budget, `urgent` ones
        (a card's creation: the asker's first sign) before the waiting others (streaming updates)."""
        refreshed = False

        async def attempt() -> dict[str, Any]:
            nonlocal refreshed
            while True:
                if budgeted:
                    await self.bucket.acquire(urgent)  # every attempt, retries included, counts against the budget
                try:
                    token = await self.token()
                    r = await self._http.request(method, self.endpoint + path, json=body, timeout=10.0,
                                                 headers={"x-acs-dingtalk-access-token": token})
                    if r.status_code == 401 and not refreshed:
                        refreshed = True
                        await self.token(refresh=True)
                        continue
                    if r.status_code == 200:
                        self._on_call(path, "ok")
                        return json_body(r)
                    payload = json_body(r)
                    detail = payload.get("accessdenieddetail") or {}
                    error = DingTalkAPIError(r.status_code, str(payload.get("code", r.status_code)),
                                             str(payload.get("message", "")), detail.get("requiredScopes"),
                                             parse_retry_after(r.headers.get("retry-after")))
                except DingTalkAPIError as exc:
                    error = exc
                except httpx.HTTPError as exc:
                    error = DingTalkAPIError(0, "network", type(exc).__name__)
                self._on_call(path, error.kind)
                if error.permission:
                    self._report_permission(path, error)
                if error.qps_limited and budgeted:
                    self.bucket.slow_down()
                raise error

        return await self.retry.run(attempt)

    def _report_permission(self, path: str, error: DingTalkAPIError) -> None:
        scopes = ", ".join(error.required_scopes) or "unknown"
        if scopes not in self._reported_scopes:
            self._reported_scopes.add(scopes)
            log.error("DingTalk refused %s: the app lacks the permission %s. Grant it in the developer console "
                      "(应用开发 > 权限管理) and publish the app again; replies use the session webhook meanwhile.",
                      path, scopes)

    async def post_webhook(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """The sessionWebhook (no token; answers HTTP 200 with errcode). Retries network and 5xx errors."""

        async def attempt() -> dict[str, Any]:
            try:
                r = await self._http.post(url, json=body, timeout=10.0)
                if r.status_code < 500:
                    payload = json_body(r)
                    self._on_call("sessionWebhook", "ok" if payload.get("errcode") == 0 else "client")
                    return payload
                error = DingTalkAPIError(r.status_code, "server", "webhook 5xx",
                                         retry_after=parse_retry_after(r.headers.get("retry-after")))
            except httpx.HTTPError as exc:
                error = DingTalkAPIError(0, "network", type(exc).__name__)
            self._on_call("sessionWebhook", error.kind)
            raise error

        return await self.retry.run(attempt)


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object, or {} when it is not one (an HTML error page, a list, nothing)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
