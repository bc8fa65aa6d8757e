"""Start real processes for tests: the inference server on a free port, waited for until ready.

Every process a test starts is stopped whatever happens: `wait_ready` stops a server that failed to
start (it exits, reports a failed start on /ready, or times out) before raising, every live process is
kept in `LIVE` so that the session's end stops what a test left behind (tests/conftest.py), and each
process is started in its own session and stopped as a group, so children (vLLM's engine core) go too.
Every process the tests start, directly or not, inherits `APPLIANCE_TEST_SESSION` (tests/leftovers.py
finds them by it).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
LOG_TAIL_LINES = 40
# Processes started and not yet stopped (ServerProcess, RedisServer): stopped at the session's end.
LIVE: set = set()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(eq=False)  # hashable by identity: kept in LIVE
class ServerProcess:
    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    proc: subprocess.Popen | None = None
    port_flag: bool = True  # pass --port (the inference server); the connector reads its env instead
    python: str = sys.executable
    ca: Path | None = None  # serves HTTPS with a certificate this CA signed

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://127.0.0.1:{self.port}"

    def start(self, log_dir: Path) -> ServerProcess:
        self.log_path = log_dir / f"{self.name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self._log = self.log_path.open("ab")
        port = ["--port", str(self.port)] if self.port_flag else []
        self.proc = subprocess.Popen([self.python, *self.args, *port], cwd=ROOT, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        LIVE.add(self)
        return self

    def wait_ready(self, path: str = "/ready", timeout: float = 180.0) -> ServerProcess:
        """Wait until `path` answers 200. Fails fast, and stops the server first, when the process exits
        or the server reports a failed start (`{"status": "failed"}`, the inference server's /ready)."""
        try:
            self._wait_ready(path, timeout)
        except BaseException:
            self.stop(timeout=10)
            raise
        return self

    def _wait_ready(self, path: str, timeout: float) -> None:
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; its last log lines:\n"
                                   f"{self.log_tail()}")
            try:
                response = httpx.get(self.url + path, timeout=2, verify=str(self.ca) if self.ca else True)
                if response.status_code == 200:
                    return
                if _reports_failure(response):
                    raise RuntimeError(f"{self.name} failed to start: {response.text}; its last log lines:\n"
                                       f"{self.log_tail()}")
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} not ready after {timeout} s; its last log lines:\n{self.log_tail()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the server, wait, then kill its whole process group (children included)."""
        LIVE.discard(self)
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            kill_group(self.proc.pid)
            return self.proc.returncode
        finally:
            self._log.close()


def _reports_failure(response: httpx.Response) -> bool:
    try:
        return response.json().get("status") == "failed"
    except ValueError:
        return False


def kill_group(pid: int) -> None:
    """Kill what is left of a process group started with start_new_session (e.g. vLLM's engine core)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# The engine the OpenAI-level tests run against: the transformers engine by default; the vLLM stage of
# `make test` sets INFERENCE_TEST_ENGINE=vllm and INFERENCE_TEST_PYTHON=.venv-vllm/bin/python.
TEST_ENGINE = os.environ.get("INFERENCE_TEST_ENGINE", "transformers")
TEST_PYTHON = os.environ.get("INFERENCE_TEST_PYTHON", sys.executable)


def inference_server(name: str, **settings: object) -> ServerProcess:
    env = {f"INFERENCE_{k.upper()}": str(v) for k, v in settings.items()}
    env.setdefault("INFERENCE_ENGINE", TEST_ENGINE)
    return ServerProcess(name, ["-m", "inference"], env=env, python=TEST_PYTHON)


def scrape(url: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (samples only)."""
    samples: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def metric(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none), whatever the label order:
    metric(scrape(url), "vllm:request_success_total", finished_reason="abort")."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        have = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', rest))
        if base == name and labels.items() <= have.items():
            total += value
    return total
