"""ASGI middlewares, one job each; the paths they act on come from the app's routes (inference/api.py).

Order, outermost first (create_app): RequestMetrics (so it counts the 401s and 413s too), BearerAuth
(refuses before any body is read), BodyLimit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import Authenticator, AuthFailure, required_scope
from .errors import (
    AuthenticationFailed,
    InferenceError,
    PayloadTooLarge,
    PermissionDenied,
    error_body,
    status_and_type,
)
from .metrics import Metrics

log = logging.getLogger("inference.auth")

OTHER = "other"  # the path label of a request that matched no route


async def send_error(send: Send, error: InferenceError) -> None:
    status, _ = status_and_type(error)
    body = json.dumps(error_body(error)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    if isinstance(error, AuthenticationFailed):
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestMetrics:
    """Counts every HTTP response by path and status: `llm_requests_total{endpoint,status}`. The label is
    the path of one of the app's routes, or "other" (a bounded label set whatever clients send)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, paths: Collection[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen: dict[str, Any] = {}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            path = scope.get("path", "")
            # no response started: the client left (499)
            self.metrics.requests.labels(path if path in self.paths else OTHER, str(seen.get("status", 499))).inc()


class BearerAuth:
    """With credentials configured (inference/auth.py: named keys, a JWT secret), the protected routes (and
    anything under a protected prefix) need `Authorization: Bearer <key or token>`: 401 in the OpenAI envelope
    saying what was wrong (never the credential), 403 for a token whose scope does not cover the route. Every
    other route stays open (probes, Prometheus). The principal's name goes into the scope's state, the log of
    refusals and `llm_requests_by_principal`; refusals are counted by reason (`llm_auth_failures`)."""

    def __init__(self, app: ASGIApp, *, authenticator: Authenticator, metrics: Metrics, paths: Collection[str],
                 prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.authenticator = authenticator
        self.metrics = metrics
        self.paths = frozenset(paths)
        self.prefixes = prefixes

    def protects(self, path: str) -> bool:
        return path in self.paths or path.startswith(self.prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not self.authenticator.enabled or not self.protects(path):
            await self.app(scope, receive, send)
            return
        try:
            principal = self.authenticator.authenticate(_bearer(scope))
        except AuthFailure as exc:
            self.metrics.auth_failures.labels(exc.reason).inc()
            client = scope.get("client") or ("?", 0)
            log.warning("refused %s %s from %s: %s", scope.get("method"), path, client[0], exc.reason)
            await send_error(send, AuthenticationFailed(exc.message))
            return
        if required_scope(path) not in principal.scopes:
            self.metrics.auth_failures.labels("scope").inc()
            await send_error(send, PermissionDenied(f"The token's scope does not allow {path} "
                                                    f"(needs {required_scope(path)!r})."))
            return
        self.metrics.principal_requests.labels(principal.name).inc()
        scope.setdefault("state", {})["principal"] = principal.name
        log.debug("%s %s by %s", scope.get("method"), path, principal.name)
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class BodyLimit:
    """Request bodies (POST, PUT, PATCH) over `max_body_bytes` get 413, by Content-Length or while read."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in ("POST", "PUT", "PATCH"):
            buffered = await self._buffered(scope, receive)
            if buffered is None:
                await send_error(send, PayloadTooLarge(
                    f"The request body exceeds the limit of {self.max_body_bytes} bytes."))
                return
            receive = buffered
        await self.app(scope, receive, send)

    async def _buffered(self, scope: Scope, receive: Receive) -> Receive | None:
        """Read the whole body (bounded), then replay it; None when it is too large."""
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.max_body_bytes:
                        return None
                except ValueError:
                    pass
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                replay_disconnect = message
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body_bytes:
                return None
            chunks.append(body)
            if not message.get("more_body", False):
                replay_disconnect = None
                break
        whole = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                if replay_disconnect is not None:
                    return replay_disconnect
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        return replay
