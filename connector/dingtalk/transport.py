"""Stream-mode transport: one WebSocket to DingTalk, heartbeat, reconnect, ACK first, parse once.

Speaks the dingtalk-stream SDK's protocol (its gateway handshake body, user agent and frame format) but
runs its own handshake and connection loop: the SDK 0.24.3 handshake is a blocking `requests.post` without a
timeout (a gateway that accepts the TCP connection and never answers would hang reconnection and SIGTERM),
and its loop neither detects a silent socket (its keepalive never waits for the pong) nor backs off (fixed
10 s / 3 s sleeps).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

import httpx
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ..core.retry import RetryPolicy
from ..types import IncomingMessage
from .message import parse_chatbot_message
from .openapi import json_body

log = logging.getLogger("connector.dingtalk.transport")

BOT_TOPIC = "/v1.0/im/bot/messages/get"
OPEN_CONNECTION = "/v1.0/gateway/connections/open"
STABLE_AFTER_S = 10.0  # a connection that lived this long resets the backoff


class StreamTransport:
    def __init__(self, *, client_id: str, client_secret: str, on_message: Callable[[IncomingMessage], None],
                 heartbeat_interval_s: float, reconnect_policy: RetryPolicy, endpoint: str,
                 http: httpx.AsyncClient, handshake_timeout_s: float = 10.0,
                 on_state: Callable[[str], None] | None = None) -> None:
        self._credentials = {"clientId": client_id, "clientSecret": client_secret}
        self._ua = user_agent()
        self._open_url = endpoint.rstrip("/") + OPEN_CONNECTION
        self._http = http
        self.handshake_timeout_s = handshake_timeout_s
        self._on_message = on_message
        self._on_state = on_state or (lambda state: None)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.reconnect_policy = reconnect_policy
        self._ws: Any = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self.connected = False

    async def run(self) -> None:
        delays = self.reconnect_policy.backoff()  # exponential with jitter, up to reconnect_max_backoff_s
        try:
            while not self._stopping:
                opened_at = time.monotonic()
                immediate = await self._session()
                if self._stopping:
                    break
                self._on_state("reconnect")
                if time.monotonic() - opened_at >= STABLE_AFTER_S:
                    delays.reset()
                if immediate:
                    continue
                delay = next(delays)
                log.info("reconnecting in %.1f s", delay)
                try:
                    await asyncio.wait_for(self._stopped.wait(), delay)
                except TimeoutError:
                    pass
        finally:
            self.connected = False

    async def _session(self) -> bool:
        """One connection, from handshake to close. True: reconnect at once (the server asked us to)."""
        connection = await self._open_connection()
        if not connection:
            return False
        uri = f"{connection['endpoint']}?ticket={quote_plus(connection['ticket'])}"
        try:
            async with websockets.connect(uri, ping_interval=None, max_size=2**22, open_timeout=10,
                                          close_timeout=2) as ws:
                self._ws = ws
                self.connected = True
                self._on_state("connected")
                log.info("Stream connection open")
                heartbeat = asyncio.create_task(self._heartbeat(ws))
                try:
                    async for raw in ws:
                        if await self._on_frame(ws, raw):
                            return True
                finally:
                    heartbeat.cancel()
        except (ConnectionClosed, OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            if not self._stopping:
                log.warning("Stream connection lost: %s", type(exc).__name__)
        finally:
            self._ws = None
            self.connected = False
            self._on_state("disconnected")
        return False

    async def _open_connection(self) -> dict[str, Any] | None:
        """The gateway handshake (`open_connection`), raced against a stop: a stop during the handshake ends it
        at once. None: try again later (the reason is logged)."""
        post = asyncio.create_task(open_connection(self._http, self._open_url, self._credentials, ua=self._ua,
                                                   timeout_s=self.handshake_timeout_s))
        stop = asyncio.create_task(self._stopped.wait())
        try:
            done, _ = await asyncio.wait({post, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (post, stop):
                task.cancel()
            await asyncio.gather(post, stop, return_exceptions=True)
        if post not in done or post.cancelled():
            return None  # stopping
        try:
            return post.result()
        except HandshakeError as exc:
            log.warning("%s", exc)
            return None

    async def _heartbeat(self, ws: Any) -> None:
        """A WebSocket ping every interval; no pong within the interval: the socket is dead."""
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            try:
                pong = await ws.ping()
                await asyncio.wait_for(pong, timeout=self.heartbeat_interval_s)
            except (TimeoutError, ConnectionClosed):
                log.warning("no heartbeat answer within %.0f s: dropping the connection", self.heartbeat_interval_s)
                ws.transport.abort()
                return

    async def _on_frame(self, ws: Any, raw: str | bytes) -> bool:
        received_at = time.monotonic()
        try:
            frame = json.loads(raw)
            headers = frame.get("headers") or {}
            kind, topic, message_id = frame.get("type"), headers.get("topic"), headers.get("messageId")
        except (ValueError, AttributeError):
            log.warning("unreadable frame ignored")
            return False
        if kind == "SYSTEM":
            await self._ack(ws, message_id, frame.get("data"))
            if topic == "disconnect":
                log.info("DingTalk asked to reconnect: %s", frame.get("data"))
                await ws.close()
                return True
            return False
        if kind == "CALLBACK" and topic == BOT_TOPIC:
            await self._ack(ws, message_id, json.dumps({"response": None}))  # ACK first, then work
            try:
                data = json.loads(frame.get("data") or "{}")
                message = parse_chatbot_message(data, message_id or "", received_at)
            except (ValueError, TypeError, AttributeError):
                log.warning("unparseable chatbot message %s ignored", message_id)
                return False
            self._on_message(message)
            return False
        await self._ack(ws, message_id, json.dumps({"status": "SUCCESS", "message": "ignored"}))
        return False

    async def _ack(self, ws: Any, message_id: str | None, data: Any) -> None:
        if not message_id:
            return
        ack = {"code": 200, "headers": {"contentType": "application/json", "messageId": message_id},
               "message": "OK", "data": data if isinstance(data, str) else json.dumps(data)}
        try:
            await ws.send(json.dumps(ack))
        except ConnectionClosed:
            log.warning("ACK for %s not sent: the connection closed (DingTalk will redeliver)", message_id)

    async def stop(self) -> None:
        """Stop taking messages: close the socket, end the loop."""
        self._stopping = True
        self._stopped.set()
        if self._ws is not None:
            await self._ws.close()


def user_agent() -> str:
    """What the SDK sends as `ua`: the gateway requires one."""
    from dingtalk_stream.version import VERSION_STRING

    return f"dingtalk-sdk-python/v{VERSION_STRING}-union"


class HandshakeError(Exception):
    """The gateway did not give a connection; the message says why (never the secret)."""


async def open_connection(http: httpx.AsyncClient, open_url: str, credentials: dict[str, str], *, timeout_s: float,
                          ua: str | None = None) -> dict[str, Any]:
    """The gateway handshake (AppKey / AppSecret -> endpoint + ticket), as the SDK's `open_connection` does it
    but with httpx and a timeout: a gateway that accepts the connection and never answers costs `timeout_s`.
    `credentials` is {"clientId", "clientSecret"}. Raises HandshakeError (also used by connector/doctor.py)."""
    body = {**credentials, "subscriptions": [{"type": "CALLBACK", "topic": BOT_TOPIC}], "ua": ua or user_agent(),
            "localIp": _local_ip()}
    try:
        response = await http.post(open_url, json=body, timeout=timeout_s, headers={"Accept": "application/json"})
    except httpx.TimeoutException:
        raise HandshakeError(f"the Stream gateway did not answer the handshake within {timeout_s:.0f} s") from None
    except httpx.HTTPError as exc:
        raise HandshakeError(f"the Stream gateway handshake failed: {type(exc).__name__}") from None
    answer = json_body(response)
    if response.status_code != 200 or not answer.get("endpoint") or not answer.get("ticket"):
        code = answer.get("code", "")
        raise HandshakeError(f"DingTalk refused to open a Stream connection: HTTP {response.status_code} {code} "
                             "(check AppKey / AppSecret and that the app uses Stream mode)")
    return answer


def _local_ip() -> str:
    """This host's outward address, as the SDK reports it to the gateway (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("8.8.8.8", 80))
            return str(probe.getsockname()[0])
    except OSError:
        return ""
