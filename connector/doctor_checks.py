"""The connector doctor's checks (connector/doctor.py runs them): DingTalk, Redis, the model server.

Each check is a small function that returns `Check`s (name, ok / warn / fail / skip, detail, fix). Nothing here
prints a secret: the AppSecret, access tokens and the model credential never leave their clients, and Redis URLs
are shown with the password masked (`mask_url`).

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

Redis: PING, INFO server, CONFIG GET appendonly / save (INFO persistence when CONFIG is not allowed): reads only.
The model server: GET /ready and the model list with the connector's credential (connector/core/model.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
import uuid
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlparse, urlunparse

import httpx
import openai

from .core.model import ModelClient, TokenMinter
from .core.retry import RetryPolicy
from .core.store import RedisStores
from .dingtalk.directory import DingTalkDirectory
from .dingtalk.openapi import DingTalkAPI, DingTalkAPIError
from .dingtalk.transport import OPEN_CONNECTION, HandshakeError, open_connection
from .settings import ConnectorSettings

Status = Literal["ok", "warn", "fail", "skip"]
CARD_INSTANCE, CARD_STREAMING = "Card.Instance.Write", "Card.Streaming.Write"
ROBOT_SEND, GET_MEMBER = "qyapi_robot_sendmsg", "qyapi_get_member"
CLOCK_SKEW_WARN_S = 60.0
NO_SUCH_USER = "appliance-doctor-no-such-user"
CONSOLE = "DingTalk developer console (open-dev.dingtalk.com) > 应用开发 > your app"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def grant(scope: str) -> str:
    """Where the permission is granted (the wording of DingTalk's console and docs/dingtalk-protocol-facts.md)."""
    return (f"{CONSOLE} > 权限管理 (permissions): search {scope}, 申请权限 (apply), then publish the app again "
            "(版本管理与发布)")


def mask_url(url: str) -> str:
    """The URL without its password: redis://:secret@host/0 -> redis://:***@host/0."""
    parts = urlparse(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunparse(parts._replace(netloc=netloc))


def on_this_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def needs_departments(settings: ConnectorSettings) -> bool:
    """Document access (the knowledge base's _access.toml rules) or department quotas use the contact API."""
    kb = settings.plugins.get("knowledge_base") or {}
    return bool(kb.get("enabled")) or bool(settings.quota_department_messages_per_day
                                           or settings.quota_department_tokens_per_day)


def _dingtalk_error(exc: DingTalkAPIError) -> str:
    return f"HTTP {exc.status} {exc.code}: {exc.message}" if exc.status else f"no answer ({exc.message})"


# ---- DingTalk ---------------------------------------------------------------------------------------------------


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


def single_try() -> RetryPolicy:
    return RetryPolicy(attempts=1, factor=1.0, base_delay_s=0.0, max_delay_s=0.0, jitter=0.0)


def check_clock(date_header: str, local_time: float, limit_s: float = CLOCK_SKEW_WARN_S) -> Check:
    """This host's clock against DingTalk's `Date` header (one-second resolution)."""
    try:
        remote = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError):
        return Check("clock", "warn", f"DingTalk's Date header {date_header!r} is unreadable")
    skew = local_time - remote
    if abs(skew) <= limit_s:
        return Check("clock", "ok", f"within {max(1, round(abs(skew)))} s of DingTalk's")
    return Check("clock", "warn", f"this host's clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} "
                 "DingTalk's: signed robot timestamps, token lifetimes and the model tokens' not-before / expiry "
                 "depend on it", "synchronise the clock (chrony or systemd-timesyncd with an NTP server)")


# ---- Redis ------------------------------------------------------------------------------------------------------


async def check_redis(settings: ConnectorSettings) -> list[Check]:
    import redis.exceptions as errors

    if settings.redis_url is None:
        return [Check("redis", "warn", "not configured: context, duplicate markers and quota counts are kept in "
                      "this process (lost at restart, not shared by replicas)", "set CONNECTOR_REDIS_URL")]
    url = settings.redis_url.get_secret_value()
    shown, parts = mask_url(url), urlparse(url)
    stores = RedisStores(url, ttl_s=60, max_turns=2, dedup_ttl_s=60, ca_bundle=settings.redis_ca_bundle)
    client = stores.client
    try:
        try:
            await client.ping()
            info = await client.info("server")
        except errors.AuthenticationError:
            fix = "put the password in redis_url: redis://:PASSWORD@host:port/db"
            return [Check("redis", "fail", f"{shown}: Redis refused the password" if parts.password else
                          f"{shown}: Redis requires a password and redis_url has none", fix)]
        except errors.ResponseError as exc:
            if "without any password" in str(exc) or isinstance(exc, errors.AuthenticationWrongNumberOfArgsError):
                return [Check("redis", "fail", f"{shown}: redis_url carries a password but Redis has none set",
                              "set requirepass in redis.conf (better), or take the password out of redis_url")]
            return [Check("redis", "fail", f"{shown}: {type(exc).__name__}", "")]
        except (errors.ConnectionError, errors.TimeoutError, OSError) as exc:
            tls = "SSL" in type(exc).__name__ or "certificate" in str(exc).lower()
            return [Check("redis", "fail", f"{shown} is not answering ({type(exc).__name__})",
                          "give redis_ca_bundle the CA that signed Redis's certificate" if tls else
                          "start Redis (or fix CONNECTOR_REDIS_URL)")]
        version = info.get("redis_version", "?")
        if parts.password:
            auth, status, fix = "password required and given", "ok", ""
        elif on_this_host(parts.hostname or ""):
            auth, status, fix = "no password (on this host only)", "ok", ""
        else:
            auth, status, fix = "no password: anyone who reaches it reads the conversations", "warn", \
                "set requirepass in redis.conf and put the password in redis_url"
        return [Check("redis", status, f"{shown}: Redis {version}, {auth}", fix), await _persistence(client)]
    finally:
        await stores.close()


async def _persistence(client: Any) -> Check:
    import redis.exceptions as errors

    try:
        config = {**await client.config_get("appendonly"), **await client.config_get("save")}
        aof, save = config.get("appendonly") == "yes", (config.get("save") or "").strip()
    except errors.ResponseError:  # CONFIG renamed or not allowed to this user
        info = await client.info("persistence")
        aof, save = bool(info.get("aof_enabled")), ""
    if aof or save:
        return Check("redis persistence", "ok", ", ".join(filter(None, ["append-only file" if aof else "",
                                                                        f"snapshots (save {save})" if save else ""])))
    return Check("redis persistence", "warn", "none: a Redis restart forgets conversation context, duplicate markers "
                 "and today's quota counts", "appendonly yes in redis.conf (or CONFIG SET appendonly yes, then "
                 "CONFIG REWRITE)")


# ---- the model server -------------------------------------------------------------------------------------------


async def check_model(settings: ConnectorSettings) -> list[Check]:
    s = settings
    http = httpx.AsyncClient(verify=ssl.create_default_context(cafile=s.model_ca_bundle)) if s.model_ca_bundle \
        else httpx.AsyncClient()
    model = ModelClient(s.model_base_url, s.model_api_key.get_secret_value(), http, model=s.model_name,
                        temperature=s.temperature, max_tokens=s.max_tokens, timeout_s=s.model_timeout_s,
                        connect_timeout_s=s.model_connect_timeout_s, retry=single_try(),
                        minter=TokenMinter(s.model_jwt_secret.get_secret_value(), ttl_s=s.model_token_ttl_s)
                        if s.model_jwt_secret else None)
    try:
        ready = await _ready(http, model.root_url, s.model_connect_timeout_s)
        if ready.status == "fail" and "not answering" in ready.detail:
            return [ready, Check("model", "skip", "needs the model server")]
        return [ready, await _model_name(model, s)]
    finally:
        await http.aclose()


async def _ready(http: httpx.AsyncClient, root: str, timeout_s: float) -> Check:
    try:
        r = await http.get(root + "/ready", timeout=max(timeout_s, 5.0))
    except httpx.HTTPError as exc:
        tls = "CERTIFICATE_VERIFY_FAILED" in str(exc)
        return Check("model server", "fail", f"{root} is not answering ({type(exc).__name__})",
                     "give model_ca_bundle the CA that signed its certificate (scripts/make_certs.py's ca.pem)" if tls
                     else "start the inference server (make run), or fix CONNECTOR_MODEL_BASE_URL")
    if r.status_code == 200:
        return Check("model server", "ok", f"{root}: ready")
    if r.status_code == 503:
        return Check("model server", "fail", f"{root}: still loading (503): it answers once the model is loaded "
                     "and warmed up", "wait, then run the doctor again; the server's log says why if it stays")
    return Check("model server", "fail", f"{root}/ready answered HTTP {r.status_code}: is this the inference server?",
                 "fix CONNECTOR_MODEL_BASE_URL (…/v1 of the inference server)")


async def _model_name(model: ModelClient, s: ConnectorSettings) -> Check:
    try:
        served = await model.served_models()
    except openai.AuthenticationError:
        return Check("model", "fail", "the model server refused the connector's credential (HTTP 401)",
                     "set model_api_key to a key the server accepts, or model_jwt_secret to its jwt_secret")
    except openai.OpenAIError as exc:
        return Check("model", "fail", f"cannot list the models: {type(exc).__name__}", "")
    if not served:
        return Check("model", "fail", "the server lists no model", "")
    if s.model_name and s.model_name not in served:
        return Check("model", "fail", f"{s.model_name} is not served (the server has {', '.join(served)})",
                     f"set CONNECTOR_MODEL_NAME to one of them, or leave it unset for {served[0]}")
    return Check("model", "ok", s.model_name or f"{served[0]} (the first the server lists)")
