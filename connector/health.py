"""/health, /ready and /metrics of the connector, and Alertmanager's webhook `POST /alerts`, on a small HTTP server
in the same event loop.

It is given what it reports (the health facts and the rendered metrics) as callables, not the app; and, when
alerts are configured (`alerts_token`), the token Alertmanager must send as `Authorization: Bearer ...` and the
relay (connector/alerts.py) that takes the notification to the DingTalk ops group. A missing or wrong token is a
401; the token is compared in constant time and never logged."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from .alerts import AlertRelay, Notification

HealthFacts = Callable[[], dict[str, Any]]
RenderMetrics = Callable[[], bytes]
MAX_ALERT_BODY = 1 << 20

log = logging.getLogger("connector.health")


def create_health_app(health_facts: HealthFacts, render_metrics: RenderMetrics, *, alerts_token: str | None = None,
                      alerts: AlertRelay | None = None,
                      on_refused: Callable[[], None] = lambda: None) -> FastAPI:
    app = FastAPI(title="connector", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(health_facts())

    @app.get("/ready")
    async def ready() -> JSONResponse:
        body = health_facts()
        return JSONResponse(body, status_code=200 if body["stream"] == "connected" else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    if alerts_token and alerts is not None:
        expected = f"Bearer {alerts_token}".encode()

        @app.post("/alerts")
        async def receive_alerts(request: Request) -> JSONResponse:
            given = request.headers.get("authorization", "").encode()
            if not secrets.compare_digest(given, expected):
                on_refused()
                log.warning("POST /alerts from %s refused: %s bearer token", request.client.host if request.client
                            else "?", "wrong" if given else "no")
                return JSONResponse({"error": "a valid bearer token is required (alerts_token)"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            raw = await request.body()
            if len(raw) > MAX_ALERT_BODY:
                return JSONResponse({"error": "the notification is larger than 1 MiB"}, status_code=413)
            try:
                notification = Notification.model_validate_json(raw)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                                     for e in exc.errors()[:5])
                return JSONResponse({"error": f"not an Alertmanager webhook notification (version 4): {problems}"},
                                    status_code=400)
            try:
                outcome = await alerts.submit(notification)
            except Exception as exc:  # Alertmanager retries a 5xx: the notification is not lost
                log.warning("alert notification %s not delivered to the ops group: %s", notification.groupKey[:80],
                            exc)
                return JSONResponse({"error": "the ops group did not take the message; Alertmanager will retry"},
                                    status_code=502)
            return JSONResponse({"status": outcome})

    return app


async def serve_health(health_facts: HealthFacts, render_metrics: RenderMetrics, host: str, port: int,
                       **alerts: Any) -> uvicorn.Server:
    """`alerts`: create_health_app's alerts_token, alerts and on_refused."""
    server = uvicorn.Server(uvicorn.Config(create_health_app(health_facts, render_metrics, **alerts), host=host,
                                           port=port, log_level="warning", lifespan="off"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    asyncio.create_task(server.serve())
    return server
