"""Helpers every script shares: a free port, waiting for an HTTP endpoint, and one percentile.

`percentile` interpolates linearly between the two nearest ranks, as numpy's default and `vllm bench
serve` do, so p99 of 16 samples lies between the 15th and 16th value instead of snapping to one of them.
"""

from __future__ import annotations

import math
import socket
import subprocess
import time

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, *, timeout: float = 300.0, proc: subprocess.Popen | None = None, what: str = "") -> None:
    """Wait until GET `url` answers 200; raise RuntimeError if `proc` exits or TimeoutError after `timeout` s."""
    what = what or url
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} was not ready after {timeout:.0f} s")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between ranks; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def p50_p99(values: list[float]) -> dict:
    """The soaks' latency summary: p50, p99 (3 decimals) and how many values."""
    return {"p50": round(percentile(values, 50), 3), "p99": round(percentile(values, 99), 3), "n": len(values)}
