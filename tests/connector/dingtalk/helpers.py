"""In-process DingTalk clients wired to the emulator, and what the emulator recorded of one app's calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from connector.core.retry import RetryPolicy
from connector.dingtalk.openapi import DingTalkAPI


class Waits:
    """RetryPolicy's sleep seam: records each wait and sleeps only a moment, so Retry-After is checked fast."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        await asyncio.sleep(min(seconds, 0.01))


def fast_retry(attempts: int = 3, sleep: Callable[[float], Any] = asyncio.sleep, max_delay_s: float = 10.0
               ) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, factor=1.5, base_delay_s=0.01, max_delay_s=max_delay_s, jitter=0.0,
                       sleep=sleep)


def dingtalk_api(emulator, http: httpx.AsyncClient, client_id: str, secret: str, *, card_qps: float = 20.0,
                 retry: RetryPolicy | None = None, outcomes: list[tuple[str, str]] | None = None) -> DingTalkAPI:
    """The real client on the emulator; `outcomes` collects (api, outcome) as the connector's metrics do."""
    return DingTalkAPI(endpoint=emulator.url, client_id=client_id, client_secret=secret, http=http,
                       card_qps=card_qps, retry=retry or fast_retry(),
                       on_call=(lambda api, outcome: outcomes.append((api, outcome))) if outcomes is not None
                       else None)


def control(emulator, method: str, path: str, **kwargs: Any) -> Any:
    """One call to the emulator's control API (/sandbox/...), its JSON answer."""
    r = httpx.request(method, emulator.url + path, **kwargs)
    r.raise_for_status()
    return r.json()


def calls_of(emulator, client_id: str | None, path: str | None = None, since: float = 0.0) -> list[dict]:
    """The OpenAPI calls the emulator logged for this app; None: every app's, and the calls it could not tell
    the app of (an unknown token, the session webhook)."""
    calls = control(emulator, "GET", "/sandbox/calls", params={"since": since, **({"path": path} if path else {})})
    return [c for c in calls if client_id is None or c["app"] == client_id]


def add_fault(emulator, api: str, *, status: int = 500, code: str = "unknownError", count: int = 1) -> None:
    control(emulator, "POST", "/sandbox/faults", json={"api": api, "status": status, "code": code, "count": count})


def clear_faults(emulator) -> None:
    control(emulator, "DELETE", "/sandbox/faults")
