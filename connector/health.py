"""/health, /ready and /metrics of the connector, on a small HTTP server in the same event loop."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

if TYPE_CHECKING:
    from .app import ConnectorApp


def create_health_app(connector: ConnectorApp) -> FastAPI:
    app = FastAPI(title="connector", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(connector.health())

    @app.get("/ready")
    async def ready() -> JSONResponse:
        body = connector.health()
        return JSONResponse(body, status_code=200 if body["stream"] == "connected" else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(connector.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


async def serve_health(connector: ConnectorApp, host: str, port: int) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(create_health_app(connector), host=host, port=port, log_level="warning",
                                           lifespan="off"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    asyncio.create_task(server.serve())
    return server
