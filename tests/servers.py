"""Start real processes for tests: the inference server on a free port, waited for until ready."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    proc: subprocess.Popen | None = None
    port_flag: bool = True  # pass --port (the inference server); the connector reads its env instead
    python: str = sys.executable

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path) -> ServerProcess:
        self.log_path = log_dir / f"{self.name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self._log = self.log_path.open("ab")
        port = ["--port", str(self.port)] if self.port_flag else []
        self.proc = subprocess.Popen([self.python, *self.args, *port], cwd=ROOT, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, path: str = "/ready", timeout: float = 180.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
        finally:
            self._log.close()


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
