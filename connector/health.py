"""/health, /ready and /metrics of the connector, on a small HTTP server in the same event loop.

It is given the two things it reports (the health facts and the rendered metrics) as callables, not the app."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

HealthFacts = Callable[[], dict[str, Any]]
RenderMetrics = Callable[[], bytes]


def create_health_app(health_facts: HealthFacts, render_metrics: RenderMetrics) -> FastAPI:
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

    return app


async def serve_health(health_facts: HealthFacts, render_metrics: RenderMetrics, host: str,
                       port: int) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(create_health_app(health_facts, render_metrics), host=host, port=port,
                                           log_level="warning", lifespan="off"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    asyncio.create_task(server.serve())
    return server
