"""HTTP routes: thin, each hands the parsed request to its serving object (inference/serving/).

Two routers: `openai_api` (the OpenAI-compatible API under /v1, and vLLM's /tokenize and /detokenize) sits behind the API key
when one is set; `operations` (probes, metrics, version) stays open. The middlewares take their paths
from these routers (create_app), so a route added here is labelled and protected without a second list.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .protocol import (ChatCompletionRequest, ChatCompletionResponse, CompletionRequest, CompletionResponse,
                       DetokenizeRequest, DetokenizeResponse, ErrorResponse, ModelList, TokenizeRequest,
                       TokenizeResponse)

ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 429, 503)}
V1 = "/v1"  # the OpenAI API's prefix: every path under it needs the key, unknown ones too (401, not 404)
openai_api = APIRouter()
operations = APIRouter()


@openai_api.post(f"{V1}/chat/completions", response_model=ChatCompletionResponse, responses=ERRORS)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    return await request.app.state.serving_chat.create(body, request)


@openai_api.post(f"{V1}/completions", response_model=CompletionResponse, responses=ERRORS)
async def completions(body: CompletionRequest, request: Request) -> Response:
    return await request.app.state.serving_completion.create(body, request)


@openai_api.get(f"{V1}/models", response_model=ModelList, responses=ERRORS)
async def list_models(request: Request) -> ModelList:
    return request.app.state.serving_models.list()


@openai_api.post("/tokenize", response_model=TokenizeResponse, responses=ERRORS)
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    return await request.app.state.serving_tokenize.create(body)


@openai_api.post("/detokenize", response_model=DetokenizeResponse, responses=ERRORS)
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    return await request.app.state.serving_tokenize.detokenize(body)


@operations.get("/health")
async def health(request: Request) -> Response:
    return await request.app.state.serving_status.health()


@operations.get("/ready")
async def ready(request: Request) -> Response:
    return request.app.state.serving_status.ready()


@operations.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@operations.get("/version")
async def version(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.serving_status.version())
