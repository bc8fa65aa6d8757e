"""A real PostgreSQL server for the audit tests: initdb in a temporary directory, started with pg_ctl.

The server refuses to run as root, so as root it runs as the `postgres` user (runuser); its data directory
lies directly under the system temporary directory, owned by that user (pytest's own temporary directories
are private to root). Every server is in tests/servers.py `LIVE` while it runs, so it is stopped whatever
happens; `scripts/setup.sh --test` installs the package.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ...servers import LIVE, free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        pytest.fail("PostgreSQL is not installed (make test installs the postgresql package)")
    return path


class PostgresServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="audit-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.running = False
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        command = ["runuser", "-u", "postgres", "--", *args] if self._as_root else list(args)
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False)

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        LIVE.add(self)
        try:
            if not self.data.exists():
                done = self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                                 "--no-sync", "-E", "UTF8")
                if done.returncode:
                    raise RuntimeError(f"initdb failed: {done.stderr[-2000:]}")
            options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            done = self._run(_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w",
                             "-t", "60", "start", timeout=90)
            if done.returncode:
                raise RuntimeError(f"PostgreSQL did not start: {done.stdout[-1000:]}{done.stderr[-1000:]}\n"
                                   f"{self.log.read_text(errors='replace')[-2000:] if self.log.exists() else ''}")
            self.running = True
        except BaseException:
            self.stop()
            raise
        return self

    def halt(self) -> None:
        """Stop the server but keep its data (it can start again)."""
        if self.data.exists():
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
        self.running = False

    def stop(self) -> None:
        """Stop it and remove its data."""
        LIVE.discard(self)
        try:
            self.halt()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def new_database(self) -> str:
        import psycopg

        name = f"audit_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's server."""
    return postgres_server.new_database()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of the test's own, not started: for tests that stop and start it."""
    server = PostgresServer()
    yield server
    server.stop()
