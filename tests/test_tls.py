"""TLS end to end with a private CA from scripts/make_certs.py: the inference server over HTTPS (the official
openai client trusting the CA, and refusing without it), Redis over TLS with a password, and a connector that
verifies both while it answers through the emulator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from .connector.conftest import RedisServer, connector_process, start_connector
from .connector.helpers import finalized
from .connector.sandbox.helpers import new_app, send
from .servers import ROOT, ServerProcess, free_port, inference_server

pytestmark = pytest.mark.slow

REDIS_PASSWORD = "redis-tls-password-0123"


def make_certs(out: Path) -> Path:
    subprocess.run([sys.executable, "scripts/make_certs.py", "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True)
    return out


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def https_inference(certs: Path, log_dir: Path):
    server = inference_server("inference-tls", ssl_certfile=certs / "server.pem", ssl_keyfile=certs / "server-key.pem",
                              max_model_len=512)
    server.ca = certs / "ca.pem"
    server.start(log_dir).wait_ready()
    try:
        yield server
    finally:
        server.stop()


class TlsRedis(RedisServer):
    """redis-server with only a TLS port and a password (Debian's build has TLS)."""

    def __init__(self, port: int, workdir: Path, certs: Path) -> None:
        super().__init__(port, workdir)
        self.certs = certs

    @property
    def url(self) -> str:
        return f"rediss://:{REDIS_PASSWORD}@127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        return ["--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
                "--tls-cert-file", str(self.certs / "server.pem"), "--tls-key-file", str(self.certs / "server-key.pem"),
                "--tls-ca-cert-file", str(self.certs / "ca.pem"), "--tls-auth-clients", "no",
                "--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]

    def probe(self):
        import redis

        return redis.Redis(port=self.port, password=REDIS_PASSWORD, ssl=True,
                           ssl_ca_certs=str(self.certs / "ca.pem"), socket_connect_timeout=0.5)


@pytest.fixture(scope="module")
def tls_redis(certs: Path, tmp_path_factory: pytest.TempPathFactory):
    server = TlsRedis(free_port(), tmp_path_factory.mktemp("redis-tls"), certs).start()
    yield server
    server.stop()


def test_the_official_client_trusts_the_private_ca_and_only_it(https_inference: ServerProcess, certs: Path,
                                                                 tmp_path: Path) -> None:
    assert https_inference.url.startswith("https://")
    with httpx.Client(verify=str(certs / "ca.pem")) as http:
        client = openai.OpenAI(base_url=https_inference.url + "/v1", api_key="unused", http_client=http,
                               max_retries=0)
        reply = client.chat.completions.create(model=client.models.list().data[0].id, max_tokens=4,
                                               messages=[{"role": "user", "content": "Hi"}])
        assert reply.choices[0].message.content is not None
    with pytest.raises(openai.APIConnectionError):  # the system's CAs do not know the private one
        openai.OpenAI(base_url=https_inference.url + "/v1", api_key="unused", max_retries=0).models.list()
    other = make_certs(tmp_path / "other")
    with httpx.Client(verify=str(other / "ca.pem")) as http, pytest.raises(openai.APIConnectionError):
        openai.OpenAI(base_url=https_inference.url + "/v1", api_key="unused", http_client=http,
                      max_retries=0).models.list()
    with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
        httpx.get(https_inference.url.replace("https://", "http://") + "/health", timeout=5)


def test_redis_over_tls_with_a_password(tls_redis: TlsRedis, certs: Path, tmp_path: Path) -> None:
    import asyncio

    from connector.core.store import RedisStores

    async def ping(url: str, ca: Path) -> bool:
        stores = RedisStores(url, ttl_s=60, max_turns=4, dedup_ttl_s=60, ca_bundle=str(ca))
        try:
            return await stores.ping()
        finally:
            await stores.close()

    assert asyncio.run(ping(tls_redis.url, certs / "ca.pem"))
    assert not asyncio.run(ping(tls_redis.url, make_certs(tmp_path / "other") / "ca.pem"))
    assert not asyncio.run(ping(tls_redis.url.replace(REDIS_PASSWORD, "wrong"), certs / "ca.pem"))


def test_a_connector_answers_over_tls_to_the_model_and_redis(emulator, https_inference: ServerProcess,
                                                             tls_redis: TlsRedis, certs: Path, log_dir: Path) -> None:
    app = new_app(emulator)
    proc = start_connector(connector_process("connector-tls", emulator=emulator, client_id=app[0], secret=app[1],
                                             model_url=https_inference.url + "/v1", redis_url=tls_redis.url,
                                             model_ca_bundle=certs / "ca.pem", redis_ca_bundle=certs / "ca.pem"),
                           log_dir, emulator, app[0])
    try:
        conversation = send(emulator, app[0], "What is the capital of France?")["conversationId"]
        [card] = finalized(emulator, conversation, 1)
        assert card["flowStatus"] == "3" and card["texts"]["msgContent"].strip()
        health = httpx.get(proc.url + "/health", timeout=5).json()
        assert health["redis"] == "up"
    finally:
        proc.stop()
    assert REDIS_PASSWORD not in proc.log()


def test_plain_http_to_another_host_is_refused() -> None:
    from pydantic import ValidationError

    from connector.settings import ConnectorSettings

    with pytest.raises(ValidationError, match="plain HTTP to another host"):
        ConnectorSettings(model_base_url="http://10.1.2.3:8000/v1")
    assert ConnectorSettings(model_base_url="http://10.1.2.3:8000/v1", model_allow_plain_http=True)
    assert ConnectorSettings(model_base_url="https://10.1.2.3:8000/v1")
    assert ConnectorSettings(model_base_url="http://localhost:8000/v1")
