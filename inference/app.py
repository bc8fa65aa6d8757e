"""App factory: create_app(settings, engine). Nothing is created at import."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .auth import Authenticator, key_digest, load_key_file
from .engines.base import Engine
from .errors import (
    InferenceError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    error_body,
    status_and_type,
)
from .gpu import GpuMonitor
from .metrics import Metrics
from .middleware import BearerAuth, BodyLimit, RequestMetrics
from .serving.admission import AdmissionController
from .serving.base import ServerState
from .serving.chat import ServingChat
from .serving.completions import ServingCompletion
from .serving.drain import Drain
from .serving.models import ServingModels
from .serving.status import ServingStatus
from .serving.streams import ClientDisconnected
from .serving.tokenize import ServingTokenize
from .settings import InferenceSettings
from .types import ChatTurn, GenerationRequest, SamplingParams

log = logging.getLogger("inference.app")


def error_response(error: InferenceError) -> JSONResponse:
    status, _ = status_and_type(error)
    return JSONResponse(error_body(error), status_code=status, headers=error.headers or None)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "Invalid request body.", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"Malformed JSON body: {first.get('ctx', {}).get('error', 'cannot parse')}.", None
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "missing" and param is None:
        return "The request body is missing or empty.", None
    message = first.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return (f"Invalid value for '{param}': {message}{more}." if param else f"{message}{more}."), param


async def _boot(app: FastAPI, engine: Engine, settings: InferenceSettings, state: ServerState) -> None:
    try:
        started = time.perf_counter()
        await engine.start()
        if settings.warmup:
            prompt = tuple(engine.tokenize_chat([ChatTurn("user", "Hello")]))
            async for _ in engine.generate(GenerationRequest("warmup", prompt, SamplingParams(max_tokens=4,
                                                                                             temperature=0.0))):
                pass
        state.ready = True
        log.info("ready in %.1f s: serving '%s' at http://%s:%d/v1", time.perf_counter() - started,
                 settings.model_name, settings.host, settings.port)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        state.failure = f"{type(exc).__name__}: {exc}"
        log.error("the model failed to load: %s", state.failure)


def create_app(settings: InferenceSettings, engine: Engine, *, gpus: GpuMonitor | None = None) -> FastAPI:
    state = ServerState(drain=Drain(settings.drain_timeout_s))
    admission = AdmissionController(settings.max_num_seqs, settings.max_waiting)
    gpu_monitor = gpus if gpus is not None else GpuMonitor()
    metrics = Metrics(engine.stats, lambda: admission.in_flight, gpu_monitor, engine.info)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        boot = asyncio.create_task(_boot(app, engine, settings, state))
        try:
            yield
        finally:
            boot.cancel()
            await asyncio.gather(boot, return_exceptions=True)
            state.ready = False
            await engine.close()
            gpu_monitor.close()

    app = FastAPI(title="On-prem assistant inference server", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.server_state = state
    app.state.metrics = metrics
    app.state.admission = admission
    app.state.drain = state.drain
    app.state.serving_chat = ServingChat(engine, settings, metrics, admission, state)
    app.state.serving_completion = ServingCompletion(engine, settings, metrics, admission, state)
    app.state.serving_tokenize = ServingTokenize(engine, settings, metrics, admission, state)
    app.state.serving_models = ServingModels(engine, settings)
    app.state.serving_status = ServingStatus(engine, state)

    @app.exception_handler(InferenceError)
    async def _inference_error(request: Request, exc: InferenceError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(InvalidRequest(message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_response(NotFound(f"No route {request.method} {request.url.path}."))
        if exc.status_code == 405:
            return error_response(MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}."))
        if exc.status_code == 400:
            return error_response(InvalidRequest(f"Malformed request body: {exc.detail}"))
        error = InferenceError(str(exc.detail))
        return JSONResponse(error_body(error), status_code=exc.status_code)

    @app.exception_handler(ClientDisconnected)
    async def _gone(request: Request, exc: ClientDisconnected) -> Response:
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(InferenceError("Internal server error."))

    from .api import V1, openai_api, operations

    app.include_router(openai_api)
    app.include_router(operations)
    # Added innermost first: metrics outermost (it counts the 401s and 413s), then the key, then the body limit.
    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(BearerAuth, authenticator=authenticator(settings), metrics=metrics,
                       paths=route_paths(openai_api), prefixes=(V1 + "/",))
    app.add_middleware(RequestMetrics, metrics=metrics, paths=route_paths(openai_api, operations))
    return app


def authenticator(settings: InferenceSettings) -> Authenticator:
    """The credentials the API accepts: the key file's named keys, the legacy api_key as 'default', the JWT
    secret. ValueError (worded for the operator) when the key file is unreadable or malformed."""
    keys = load_key_file(settings.api_keys_file) if settings.api_keys_file else {}
    if settings.api_key:
        keys.setdefault("default", key_digest(settings.api_key.get_secret_value()))
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    return Authenticator(keys, secret, settings.jwt_max_lifetime_s, settings.jwt_leeway_s)


def route_paths(*routers: APIRouter) -> set[str]:
    """The paths of the routes of these routers (the app includes them all)."""
    return {route.path for router in routers for route in router.routes if isinstance(route, APIRoute)}
