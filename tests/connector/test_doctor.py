"""The connector doctor (connector/doctor.py): against the DingTalk emulator (its app permissions and card templates),
a real Redis and the real inference server; the clock comparison and the masking on their own."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from email.utils import formatdate

import pytest

from connector.doctor import run
from connector.doctor_checks import check_clock, mask_url
from connector.doctor_dingtalk import needs_departments
from connector.settings import ConnectorSettings

from ..servers import ROOT, free_port
from .sandbox.helpers import new_app

slow = pytest.mark.slow
ALL_SCOPES = ["Card.Streaming.Write", "Card.Instance.Write", "qyapi_robot_sendmsg", "qyapi_get_member"]


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


# ---- without servers ---------------------------------------------------------------------------------------------


def test_clock_within_a_minute_is_ok_beyond_is_a_warning() -> None:
    now = 1_700_000_000.0
    assert check_clock(formatdate(now, usegmt=True), now + 2).status == "ok"
    ahead = check_clock(formatdate(now, usegmt=True), now + 95)
    assert ahead.status == "warn" and "95 s ahead of" in ahead.detail and "NTP" in ahead.fix
    behind = check_clock(formatdate(now, usegmt=True), now - 3600)
    assert behind.status == "warn" and "3600 s behind" in behind.detail
    assert check_clock("not a date", now).status == "warn"


def test_redis_password_is_masked() -> None:
    assert mask_url("redis://:s3cret@10.0.0.5:6380/2") == "redis://:***@10.0.0.5:6380/2"
    assert mask_url("rediss://app:s3cret@redis.local/0") == "rediss://app:***@redis.local/0"
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_the_contact_permission_is_needed_for_document_access_or_department_quotas() -> None:
    assert not needs_departments(ConnectorSettings())
    assert needs_departments(ConnectorSettings(plugins={"knowledge_base": {"enabled": True}}))
    assert needs_departments(ConnectorSettings(quota_department_messages_per_day=100))


# ---- against the emulator, Redis and the model server ------------------------------------------------------------


@pytest.fixture
def persistent_redis(redis_server) -> Iterator[str]:
    """The session's Redis with the append-only file on for the test (a healthy production Redis)."""
    client = redis_server.client()
    client.config_set("appendonly", "yes")
    try:
        yield redis_server.url
    finally:
        client.config_set("appendonly", "no")


def settings_for(emulator, client_id: str, secret: str, **extra: object) -> ConnectorSettings:
    values: dict[str, object] = {"client_id": client_id, "client_secret": secret,
                                 "openapi_endpoint": emulator.url, "model_base_url": "http://127.0.0.1:9/v1"}
    return ConnectorSettings(**{**values, **extra})


def doctor(settings: ConnectorSettings) -> dict:
    return by_name(asyncio.run(run(settings)))


def doctor_process(emulator, client_id: str, secret: str, *args: str, **settings: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONNECTOR_CLIENT_ID": client_id, "CONNECTOR_CLIENT_SECRET": secret,
           "CONNECTOR_OPENAPI_ENDPOINT": emulator.url,
           **{f"CONNECTOR_{k.upper()}": v for k, v in settings.items()}}
    return subprocess.run([sys.executable, "-m", "connector.doctor", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@slow
def test_a_healthy_configuration_passes_every_check(emulator, persistent_redis, inference) -> None:
    client_id, secret = new_app(emulator)
    done = doctor_process(emulator, client_id, secret, "--json", model_base_url=inference.url + "/v1",
                          redis_url=persistent_redis)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert set(statuses.values()) == {"ok"}, report
    assert {"dingtalk token", "permission Card.Instance.Write", "card template", "permission Card.Streaming.Write",
            "permission qyapi_robot_sendmsg", "permission qyapi_get_member", "stream gateway", "clock", "redis",
            "redis persistence", "model server", "model"} == set(statuses)
    assert report["summary"]["ok"] == len(report["checks"])
    checks = {c["name"]: c for c in report["checks"]}
    assert "SmolLM2" in checks["model"]["detail"]
    assert "append-only" in checks["redis persistence"]["detail"]
    assert secret not in done.stdout + done.stderr


@slow
def test_a_missing_permission_is_named_with_where_to_grant_it(emulator) -> None:
    client_id, secret = new_app(emulator, scopes=[s for s in ALL_SCOPES if s != "Card.Streaming.Write"])
    done = doctor_process(emulator, client_id, secret, model_base_url="http://127.0.0.1:9/v1")
    assert done.returncode == 1, done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if "permission Card.Streaming.Write" in x)
    assert line.startswith("FAIL") and "missing" in line
    assert "权限管理" in done.stdout and "search Card.Streaming.Write" in done.stdout
    assert next(x for x in done.stdout.splitlines() if "permission Card.Instance.Write" in x).startswith("ok")
    assert secret not in done.stdout + done.stderr


@slow
def test_the_contact_permission_fails_only_when_the_configuration_needs_it(emulator) -> None:
    client_id, secret = new_app(emulator, scopes=[s for s in ALL_SCOPES if s != "qyapi_get_member"])
    plain = doctor(settings_for(emulator, client_id, secret))["permission qyapi_get_member"]
    assert plain.status == "warn" and "missing" in plain.detail and "search qyapi_get_member" in plain.fix
    needed = doctor(settings_for(emulator, client_id, secret, plugins={"knowledge_base": {"enabled": True}}))
    assert needed["permission qyapi_get_member"].status == "fail"
    assert "document access" in needed["permission qyapi_get_member"].detail


@slow
def test_robot_send_permission_and_robot_code(emulator) -> None:
    client_id, secret = new_app(emulator, scopes=[s for s in ALL_SCOPES if s != "qyapi_robot_sendmsg"])
    missing = doctor(settings_for(emulator, client_id, secret))["permission qyapi_robot_sendmsg"]
    assert missing.status == "fail" and "search qyapi_robot_sendmsg" in missing.fix
    client_id, secret = new_app(emulator)
    wrong = doctor(settings_for(emulator, client_id, secret, robot_code="not-this-robot"))
    assert wrong["permission qyapi_robot_sendmsg"].status == "fail"
    assert "not-this-robot" in wrong["permission qyapi_robot_sendmsg"].detail


@slow
def test_a_wrong_app_secret_fails_the_token_check_clearly(emulator) -> None:
    client_id, _ = new_app(emulator)
    done = doctor_process(emulator, client_id, "not-the-secret", "--json", model_base_url="http://127.0.0.1:9/v1")
    assert done.returncode == 1
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    token = checks["dingtalk token"]
    assert token["status"] == "fail" and "refused AppKey" in token["detail"] and "invalidClientIdOrSecret" in \
        token["detail"] and "凭证与基础信息" in token["fix"]
    assert checks["permission Card.Streaming.Write"]["status"] == "skip"
    assert checks["stream gateway"]["status"] == "fail"
    assert "not-the-secret" not in done.stdout + done.stderr


@slow
def test_a_card_template_that_does_not_exist_is_named(emulator) -> None:
    client_id, secret = new_app(emulator, templates={"unpublished.schema": False})
    checks = doctor(settings_for(emulator, client_id, secret, card_template_id="no-such-template.schema"))
    assert checks["permission Card.Instance.Write"].status == "ok"
    assert checks["card template"].status == "fail"
    assert "no-such-template.schema" in checks["card template"].detail
    assert "card_template_id" in checks["card template"].fix
    unpublished = doctor(settings_for(emulator, client_id, secret, card_template_id="unpublished.schema"))
    assert unpublished["card template"].status == "fail" and "not published" in unpublished["card template"].detail


@slow
def test_redis_down_and_model_server_unreachable_fail(emulator) -> None:
    client_id, secret = new_app(emulator)
    port = free_port()
    checks = doctor(settings_for(emulator, client_id, secret, redis_url=f"redis://:pw@127.0.0.1:{port}/0",
                                 model_base_url=f"http://127.0.0.1:{free_port()}/v1"))
    assert checks["redis"].status == "fail" and "not answering" in checks["redis"].detail
    assert f"redis://:***@127.0.0.1:{port}/0" in checks["redis"].detail and ":pw@" not in checks["redis"].detail
    assert checks["model server"].status == "fail" and "not answering" in checks["model server"].detail
    assert checks["model"].status == "skip"
    assert checks["dingtalk token"].status == "ok"


@slow
def test_redis_without_persistence_or_without_a_password_it_requires_is_a_warning(emulator, redis_server) -> None:
    client_id, secret = new_app(emulator)
    checks = doctor(settings_for(emulator, client_id, secret, redis_url=redis_server.url))
    assert checks["redis"].status == "ok" and "no password" in checks["redis"].detail
    assert checks["redis persistence"].status == "warn" and "appendonly yes" in checks["redis persistence"].fix
    extra = redis_server.url.replace("redis://", "redis://:s3cret@")
    checks = doctor(settings_for(emulator, client_id, secret, redis_url=extra))
    assert checks["redis"].status == "warn" and "does not require one" in checks["redis"].detail
    assert "requirepass" in checks["redis"].fix and "s3cret" not in checks["redis"].detail


@slow
def test_redis_over_tls_with_a_password(emulator, tmp_path_factory: pytest.TempPathFactory) -> None:
    from ..test_tls import REDIS_PASSWORD, TlsRedis, make_certs

    certs = make_certs(tmp_path_factory.mktemp("doctor-tls"))
    server = TlsRedis(free_port(), tmp_path_factory.mktemp("doctor-redis-tls"), certs).start()
    try:
        client_id, secret = new_app(emulator)
        ca = str(certs / "ca.pem")
        checks = doctor(settings_for(emulator, client_id, secret, redis_url=server.url, redis_ca_bundle=ca))
        assert checks["redis"].status == "ok" and "password required and given" in checks["redis"].detail
        assert REDIS_PASSWORD not in checks["redis"].detail and "rediss://:***@" in checks["redis"].detail
        bare = server.url.replace(f":{REDIS_PASSWORD}@", "")
        none = doctor(settings_for(emulator, client_id, secret, redis_url=bare, redis_ca_bundle=ca))["redis"]
        assert none.status == "fail" and "requires a password" in none.detail
        wrong = server.url.replace(REDIS_PASSWORD, "not-the-password")
        refused = doctor(settings_for(emulator, client_id, secret, redis_url=wrong, redis_ca_bundle=ca))["redis"]
        assert refused.status == "fail" and "refused the password" in refused.detail
        assert "not-the-password" not in refused.detail
        untrusted = doctor(settings_for(emulator, client_id, secret, redis_url=server.url))["redis"]
        assert untrusted.status == "fail" and "redis_ca_bundle" in untrusted.fix
    finally:
        server.stop()


@slow
def test_the_model_credential_minted_or_refused(emulator, small_inference) -> None:
    from ..conftest import TEST_JWT_SECRET

    client_id, secret = new_app(emulator)
    url = small_inference.url + "/v1"
    minted = doctor(settings_for(emulator, client_id, secret, model_base_url=url, model_jwt_secret=TEST_JWT_SECRET))
    assert minted["model server"].status == "ok" and minted["model"].status == "ok"
    refused = doctor(settings_for(emulator, client_id, secret, model_base_url=url, model_api_key="wrong-key"))
    assert refused["model"].status == "fail" and "HTTP 401" in refused["model"].detail
    assert "model_jwt_secret" in refused["model"].fix
    unknown = doctor(settings_for(emulator, client_id, secret, model_base_url=url, model_jwt_secret=TEST_JWT_SECRET,
                                  model_name="llama-70b"))
    assert unknown["model"].status == "fail" and "llama-70b is not served" in unknown["model"].detail


@slow
def test_a_gateway_that_does_not_answer_the_handshake_fails_within_the_timeout(emulator) -> None:
    import time

    import httpx

    client_id, secret = new_app(emulator)
    httpx.post(emulator.url + "/sandbox/faults", json={"api": "/v1.0/gateway/connections/open", "status": 0,
                                                       "latency_s": 5, "count": 1}).raise_for_status()
    started = time.monotonic()
    try:
        gateway = doctor(settings_for(emulator, client_id, secret, stream_handshake_timeout_s=0.5))["stream gateway"]
    finally:
        httpx.delete(emulator.url + "/sandbox/faults")
    assert gateway.status == "fail" and "did not answer the handshake within" in gateway.detail
    assert time.monotonic() - started < 5
