"""Run the emulator: HTTP (OpenAPI, control API, chat page) and the Stream gateway, in one event loop.

    python -m connector.sandbox [--host 127.0.0.1] [--port 9000] [--ws-port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import threading
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse

from ..core import pii
from .gateway import Gateway
from .state import Sandbox

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("sandbox")


def create_emulator_app(sandbox: Sandbox, gateway: Gateway) -> FastAPI:
    from . import control, openapi

    app = FastAPI(title="DingTalk Open Platform emulator", docs_url="/sandbox/docs", openapi_url="/sandbox/openapi.json")
    app.state.sandbox = sandbox
    app.state.gateway = gateway
    app.include_router(openapi.router)
    app.include_router(control.router)

    @app.get("/", response_class=HTMLResponse)
    async def chat_page() -> HTMLResponse:
        return HTMLResponse((STATIC / "chat.html").read_text(encoding="utf-8"))

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class EmulatorServer:
    """The emulator in a background thread with its own event loop (tests, the first-run demo)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ws_port: int = 0, *,
                 redeliver_after_s: float = 60.0, ping_interval_s: float = 30.0,
                 disconnect_close_after_s: float = 10.0) -> None:
        self.host = host
        self._http_sock = _bind(host, port)
        self.port = self._http_sock.getsockname()[1]
        self._ws_port = ws_port
        self.sandbox = Sandbox(http_base=f"http://{host}:{self.port}", redeliver_after_s=redeliver_after_s,
                               disconnect_close_after_s=disconnect_close_after_s)
        self.gateway = Gateway(self.sandbox, ping_interval_s=ping_interval_s)
        self.app = create_emulator_app(self.sandbox, self.gateway)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return self.sandbox.http_base

    async def serve(self) -> None:
        ws_port = await self.gateway.start(self.host, self._ws_port)
        self.sandbox.ws_base = f"ws://{self.host}:{ws_port}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", ws="none")
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._started.set()
        try:
            await self._server.serve(sockets=[self._http_sock])
        finally:
            await self.gateway.close()

    def start(self) -> EmulatorServer:
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(self.serve())
            except BaseException as exc:  # surfaced to start()
                self._error = exc
                self._started.set()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="dingtalk-emulator", daemon=True)
        self._thread.start()
        self._started.wait(10)
        if self._error:
            raise RuntimeError(f"emulator failed to start: {self._error}")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="DingTalk Open Platform emulator (Stream mode, cards, robot)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--ws-port", type=int, default=0)
    parser.add_argument("--redeliver-after", type=float, default=60.0, help="seconds before an unACKed push is re-sent")
    parser.add_argument("--ping-interval", type=float, default=30.0, help="seconds between SYSTEM ping frames")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pii.install()  # personal data masked in every log line, as in the connector
    server = EmulatorServer(args.host, args.port, args.ws_port, redeliver_after_s=args.redeliver_after,
                            ping_interval_s=args.ping_interval)
    print(f"DingTalk emulator: chat page http://{args.host}:{server.port}/  "
          f"(set DINGTALK_OPENAPI_ENDPOINT=http://{args.host}:{server.port})", flush=True)
    try:
        asyncio.run(server.serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
