"""ASGI middlewares: body size limit (413), API key on /v1 (401), request counting by status."""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import AuthenticationFailed, InferenceError, PayloadTooLarge, error_body, status_and_type
from .metrics import Metrics

PROTECTED_PREFIXES = ("/v1/", "/tokenize", "/detokenize")
COUNTED_PATHS = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/tokenize", "/health", "/ready",
                 "/metrics", "/version"}


async def send_error(send: Send, error: InferenceError) -> None:
    status, _ = status_and_type(error)
    body = json.dumps(error_body(error)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    if isinstance(error, AuthenticationFailed):
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Counts every response by path and status; enforces the API key and the body limit."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self._key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        status_seen: dict[str, Any] = {}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen["status"] = message["status"]
            await send(message)

        try:
            if self._key is not None and path.startswith(PROTECTED_PREFIXES) and not self._authorized(scope):
                await send_error(counting_send, AuthenticationFailed(
                    "Missing or invalid API key: send 'Authorization: Bearer <key>'."))
                return
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                receive = await self._buffered(scope, receive)
                if receive is None:
                    await send_error(counting_send, PayloadTooLarge(
                        f"The request body exceeds the limit of {self.max_body_bytes} bytes."))
                    return
            await self.app(scope, receive, counting_send)
        finally:
            label = path if path in COUNTED_PATHS else "other"
            self.metrics.requests.labels(label, str(status_seen.get("status", 499))).inc()

    def _authorized(self, scope: Scope) -> bool:
        assert self._key is not None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key)
        return False

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
