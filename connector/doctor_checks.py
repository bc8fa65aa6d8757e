"""The connector doctor's checks (connector/doctor.py runs them): the `Check` result, the clock, Redis, the model
server; DingTalk's probes are in connector/doctor_dingtalk.py.

Each check is a small function that returns `Check`s (name, ok / warn / fail / skip, detail, fix). Nothing here
prints a secret: the AppSecret, access tokens and the model credential never leave their clients, and Redis URLs
are shown with the password masked (`mask_url`).

Redis: PING, INFO server, CONFIG GET appendonly / save (INFO persistence when CONFIG is not allowed): reads only.
The model server: GET /ready and the model list with the connector's credential (connector/core/model.py).
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlparse, urlunparse

import httpx
import openai

from .core.model import ModelClient, TokenMinter
from .core.retry import RetryPolicy
from .core.store import RedisStores
from .settings import ConnectorSettings

Status = Literal["ok", "warn", "fail", "skip"]
CLOCK_SKEW_WARN_S = 60.0
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
            return [Check("redis", "fail", f"{shown}: {type(exc).__name__}", "")]
        except (errors.ConnectionError, errors.TimeoutError, OSError) as exc:
            tls = "SSL" in type(exc).__name__ or "certificate" in str(exc).lower()
            return [Check("redis", "fail", f"{shown} is not answering ({type(exc).__name__})",
                          "give redis_ca_bundle the CA that signed Redis's certificate" if tls else
                          "start Redis (or fix CONNECTOR_REDIS_URL)")]
        version = info.get("redis_version", "?")
        if parts.password and await _open_without_password(url, settings.redis_ca_bundle):
            auth, status, fix = "a password is given but Redis does not require one", "warn", \
                "set requirepass in redis.conf (the password redis_url carries)"
        elif parts.password:
            auth, status, fix = "password required and given", "ok", ""
        elif on_this_host(parts.hostname or ""):
            auth, status, fix = "no password (on this host only)", "ok", ""
        else:
            auth, status, fix = "no password: anyone who reaches it reads the conversations", "warn", \
                "set requirepass in redis.conf and put the password in redis_url"
        return [Check("redis", status, f"{shown}: Redis {version}, {auth}", fix), await _persistence(client)]
    finally:
        await stores.close()


async def _open_without_password(url: str, ca_bundle: str | None) -> bool:
    """Whether Redis answers a client that gives no password (redis-py gives up AUTH quietly when Redis has none)."""
    parts = urlparse(url)
    bare = urlunparse(parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else "")))
    stores = RedisStores(bare, ttl_s=60, max_turns=2, dedup_ttl_s=60, ca_bundle=ca_bundle)
    import redis.exceptions as errors

    try:
        await stores.client.ping()
        return True
    except (errors.RedisError, OSError):
        return False
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
                        if s.model_jwt_secret else None, extra_body=s.model_extra_body())
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
