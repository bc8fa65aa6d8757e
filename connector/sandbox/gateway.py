"""The Stream-mode WebSocket gateway: tickets, frames, ACKs, SYSTEM ping / disconnect, redelivery."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from http import HTTPStatus
from urllib.parse import parse_qs, urlparse

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .state import Connection, Push, Sandbox

log = logging.getLogger("sandbox.gateway")


class Gateway:
    def __init__(self, sandbox: Sandbox, *, ping_interval_s: float = 30.0) -> None:
        self.sandbox = sandbox
        self.ping_interval_s = ping_interval_s
        self._server: Server | None = None
        self._sockets: dict[str, ServerConnection] = {}
        self._tasks: set[asyncio.Task] = set()
        self._last_sent: dict[str, float] = {}  # msgId -> time of its latest delivery

    async def start(self, host: str, port: int) -> int:
        self._server = await serve(self._handle, host, port, process_request=self._check_ticket,
                                   ping_interval=None, max_size=2**22)
        self._spawn(self._redelivery_loop())
        return self._server.sockets[0].getsockname()[1] if self._server.sockets else port

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for ws in list(self._sockets.values()):
            ws.transport.abort()  # shutting down: no close handshakes to wait for (silent sockets never answer)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- handshake and connection --------------------------------------------------------

    def _check_ticket(self, connection: ServerConnection, request: Request) -> Response | None:
        ticket = (parse_qs(urlparse(request.path).query).get("ticket") or [""])[0]
        redeemed = self.sandbox.redeem_ticket(ticket)
        if redeemed is None:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid or expired ticket\n")
        connection.redeemed = redeemed  # type: ignore[attr-defined]
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        app, subscriptions = ws.redeemed  # type: ignore[attr-defined]
        conn = Connection(connection_id=uuid.uuid4().hex, app=app, subscriptions=subscriptions,
                          outbox=asyncio.Queue(), transport=ws.transport)
        self.sandbox.connections[conn.connection_id] = conn
        self._sockets[conn.connection_id] = ws
        log.info("app %s connected (%s)", app.client_id, conn.connection_id)
        sender = self._spawn(self._send_loop(conn, ws))
        pinger = self._spawn(self._ping_loop(conn))
        self._flush_undelivered()
        try:
            async for raw in ws:
                if conn.silent:
                    continue
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(message, dict) and "code" in message:
                    self.sandbox.record_ack(conn, message)
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            sender.cancel()
            pinger.cancel()
            self._sockets.pop(conn.connection_id, None)
            log.info("app %s disconnected (%s)", app.client_id, conn.connection_id)

    async def _send_loop(self, conn: Connection, ws: ServerConnection) -> None:
        while True:
            text = await conn.outbox.get()
            if text is None:
                return
            if conn.silent:
                continue  # a dead path: frames vanish
            try:
                await ws.send(text)
            except ConnectionClosed:
                return

    async def _ping_loop(self, conn: Connection) -> None:
        while self.ping_interval_s > 0:
            await asyncio.sleep(self.ping_interval_s)
            self.ping(conn)

    # ---- control -------------------------------------------------------------------------

    def ping(self, conn: Connection) -> str:
        message_id, text = self.sandbox.frame(conn, "SYSTEM", "ping", {"opaque": uuid.uuid4().hex})
        conn.outbox.put_nowait(text)
        return message_id

    def send_disconnect(self, conn: Connection, reason: str = "server restart") -> None:
        _, text = self.sandbox.frame(conn, "SYSTEM", "disconnect", {"reason": reason})
        conn.outbox.put_nowait(text)

        async def close_later() -> None:
            await asyncio.sleep(self.sandbox.disconnect_close_after_s)
            ws = self._sockets.get(conn.connection_id)
            if ws is not None:
                await ws.close(1000, "disconnect")

        self._spawn(close_later())

    def drop(self, conn: Connection) -> None:
        """Cut the TCP connection without a close frame (a network failure)."""
        conn.closed = True
        if conn.transport is not None:
            conn.transport.abort()

    def silence(self, conn: Connection) -> None:
        """Stop reading and sending: the socket stays open but nothing answers (a zombie connection)."""
        conn.silent = True
        if conn.transport is not None:
            conn.transport.pause_reading()

    # ---- pushes and redelivery -----------------------------------------------------------

    def push(self, push: Push) -> bool:
        self.sandbox.pushes[push.msg_id] = push
        if not push.delivered:
            return False
        if self.sandbox.deliver(push):
            self._last_sent[push.msg_id] = time.monotonic()
            return True
        self.sandbox.undelivered.append(push)
        return False

    def redeliver(self, push: Push) -> bool:
        if self.sandbox.deliver(push):
            self._last_sent[push.msg_id] = time.monotonic()
            return True
        return False

    def _flush_undelivered(self) -> None:
        pending = list(self.sandbox.undelivered)
        self.sandbox.undelivered.clear()
        for push in pending:
            if push.acked_message_id is None:
                self.push(push)

    async def _redelivery_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            for push in list(self.sandbox.pushes.values()):
                if push.acked_message_id is not None or not push.delivered:
                    continue
                sent = self._last_sent.get(push.msg_id)
                if sent is None or now - sent < self.sandbox.redeliver_after_s:
                    continue
                if push.deliveries > self.sandbox.max_redeliveries:
                    continue
                if self.sandbox.deliver(push):
                    log.info("redelivering %s (delivery %d)", push.msg_id, push.deliveries)
                    self._last_sent[push.msg_id] = now
            if self.sandbox.undelivered:
                self._flush_undelivered()
