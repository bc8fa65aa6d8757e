"""Real processes for connector tests: redis-server, the connector itself."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..servers import LIVE, ServerProcess, free_port


class RedisServer:
    def __init__(self, port: int, workdir: Path) -> None:
        self.port, self.workdir = port, workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        """The server's command line after the binary (subclasses: TLS, a password)."""
        return ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir)]

    def probe(self):
        """A client that can reach the server once it is up."""
        import redis

        return redis.Redis(port=self.port, socket_connect_timeout=0.2)

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (make test installs it)")
        self.proc = subprocess.Popen([binary, *self.args()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        LIVE.add(self)
        import redis

        client = self.probe()
        for _ in range(100):
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        LIVE.discard(self)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def client(self):
        import redis

        return redis.Redis(port=self.port, decode_responses=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def _audit_dir() -> Path:
    """Where connectors started by tests keep their audit trail unless a test names one: one temporary folder
    for the session, removed at its end (never var/ in the working tree)."""
    global _AUDIT_DIR
    if _AUDIT_DIR is None:
        _AUDIT_DIR = Path(tempfile.mkdtemp(prefix="connector-audit-"))
        atexit.register(shutil.rmtree, _AUDIT_DIR, True)
    return _AUDIT_DIR


_AUDIT_DIR: Path | None = None


def connector_process(name: str, *, emulator, client_id: str, secret: str, model_url: str,
                      redis_url: str | None = None, **settings: object) -> ServerProcess:
    port = free_port()
    if "audit_path" not in settings and "audit_dsn" not in settings:
        settings["audit_path"] = _audit_dir() / f"{name}-{port}.sqlite3"
    settings.setdefault("audit_spill_path", _audit_dir() / f"{name}-{port}-spill.jsonl")
    env = {
        "CONNECTOR_CLIENT_ID": client_id, "CONNECTOR_CLIENT_SECRET": secret,
        "CONNECTOR_OPENAPI_ENDPOINT": emulator.url, "CONNECTOR_MODEL_BASE_URL": model_url,
        "CONNECTOR_TEMPERATURE": "0", "CONNECTOR_MAX_TOKENS": "24", "CONNECTOR_CARD_UPDATE_INTERVAL_S": "0.2",
        "CONNECTOR_RETRY_BASE_DELAY_S": "0.1", "CONNECTOR_HEALTH_PORT": str(port), "CONNECTOR_LOG_LEVEL": "debug",
        **({"CONNECTOR_REDIS_URL": redis_url} if redis_url else {}),
        **{f"CONNECTOR_{k.upper()}": str(v) for k, v in settings.items()},
    }
    return ServerProcess(name, ["-m", "connector"], env=env, port=port, port_flag=False)


def start_connector(server: ServerProcess, log_dir: Path, emulator, client_id: str) -> ServerProcess:
    """Start it and wait until its Stream connection is open and /ready answers."""
    from .sandbox.helpers import live_connections, wait_for

    server.start(log_dir)
    try:
        wait_for(lambda: live_connections(emulator, client_id), timeout=30)
        wait_for(lambda: _ready(server), timeout=30)
    except BaseException:
        server.stop(timeout=10)
        raise
    return server


def _ready(server: ServerProcess) -> bool:
    try:
        return httpx.get(server.url + "/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
