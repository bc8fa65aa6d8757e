"""The Stream transport's own handshake (httpx, with a timeout) against the emulator's gateway: a gateway that
stalls costs the timeout and a retry, never a hung reconnect loop or a hung stop."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from connector.core.retry import RetryPolicy
from connector.dingtalk.transport import OPEN_CONNECTION, StreamTransport

from ..sandbox.helpers import live_connections, new_app
from .helpers import clear_faults, control


def transport(emulator, app: tuple[str, str], http: httpx.AsyncClient, received: list) -> StreamTransport:
    return StreamTransport(client_id=app[0], client_secret=app[1], on_message=received.append,
                           heartbeat_interval_s=30, endpoint=emulator.url, http=http, handshake_timeout_s=0.5,
                           reconnect_policy=RetryPolicy(attempts=1, factor=2, base_delay_s=0.1, max_delay_s=0.2,
                                                        jitter=0))


async def wait_until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_a_stalled_handshake_times_out_and_the_next_attempt_connects(emulator, caplog) -> None:
    app = new_app(emulator)
    control(emulator, "POST", "/sandbox/faults", json={"api": OPEN_CONNECTION, "status": 0, "latency_s": 30,
                                                      "count": 1})

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            t = transport(emulator, app, http, [])
            task = asyncio.create_task(t.run())
            try:
                started = time.monotonic()
                await wait_until(lambda: t.connected, timeout=10)
                assert time.monotonic() - started < 5  # 0.5 s timeout + a short backoff, not 30 s
                assert live_connections(emulator, app[0])
            finally:
                await t.stop()
                await asyncio.wait_for(task, 5)

    try:
        with caplog.at_level(logging.WARNING, logger="connector.dingtalk.transport"):
            asyncio.run(main())
    finally:
        clear_faults(emulator)
    assert "did not answer the handshake within" in caplog.text
    assert app[1] not in caplog.text


def test_stop_during_a_stalled_handshake_returns_at_once(emulator) -> None:
    app = new_app(emulator)
    control(emulator, "POST", "/sandbox/faults", json={"api": OPEN_CONNECTION, "status": 0, "latency_s": 30,
                                                      "count": -1})

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            t = transport(emulator, app, http, [])
            t.handshake_timeout_s = 20  # the stop, not the timeout, must end it
            task = asyncio.create_task(t.run())
            await asyncio.sleep(0.5)
            started = time.monotonic()
            await t.stop()
            await asyncio.wait_for(task, 5)
            assert time.monotonic() - started < 1.0

    try:
        asyncio.run(main())
    finally:
        clear_faults(emulator)


def test_refused_credentials_are_logged_without_the_secret(emulator, caplog) -> None:
    app, secret = new_app(emulator), "wrong-secret-0123"

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            t = transport(emulator, (app[0], secret), http, [])
            task = asyncio.create_task(t.run())
            await asyncio.sleep(0.6)
            await t.stop()
            await asyncio.wait_for(task, 5)
            assert not t.connected

    with caplog.at_level(logging.WARNING, logger="connector.dingtalk.transport"):
        asyncio.run(main())
    assert "refused to open a Stream connection: HTTP 401" in caplog.text or "HTTP 400" in caplog.text
    assert secret not in caplog.text
