"""HTTP routes: thin, each hands the parsed request to its serving object."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from . import __version__
from .errors import NotReady
from .protocol import (ChatCompletionRequest, ChatCompletionResponse, CompletionRequest, CompletionResponse,
                       ErrorResponse, ModelList, TokenizeRequest, TokenizeResponse)
from .serving.chat import ServingChat, chat_turns
from .serving.completions import ServingCompletion

ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 429, 503)}
router = APIRouter()


def _chat(request: Request) -> ServingChat:
    return request.app.state.serving_chat


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses=ERRORS)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    return await _chat(request).create(body, request)


@router.post("/v1/completions", response_model=CompletionResponse, responses=ERRORS)
async def completions(body: CompletionRequest, request: Request) -> Response:
    serving: ServingCompletion = request.app.state.serving_completion
    return await serving.create(body, request)


@router.get("/v1/models", response_model=ModelList, responses=ERRORS)
async def list_models(request: Request) -> ModelList:
    return request.app.state.model_list()


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERRORS)
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    serving = _chat(request)
    serving.ensure_ready()
    serving.check_model(body.model)
    if body.messages is not None:
        ids = serving.tokenize_chat(chat_turns(body.messages), body.add_generation_prompt)
    elif body.prompt is not None:
        ids = serving.tokenize_text(body.prompt)
    else:
        from .errors import InvalidRequest

        raise InvalidRequest("Give either 'messages' or 'prompt'.", param="messages")
    return TokenizeResponse(count=len(ids), max_model_len=serving.max_model_len,
                            tokens=ids if body.return_tokens else None)


@router.get("/health")
async def health(request: Request) -> Response:
    state = request.app.state.server_state
    if state.failure:
        return JSONResponse({"status": "failed", "reason": state.failure}, status_code=503)
    if state.ready and not await request.app.state.engine.health():
        return JSONResponse({"status": "engine_dead"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/ready")
async def ready(request: Request) -> Response:
    state = request.app.state.server_state
    if not state.ready:
        error = NotReady(f"The model failed to load: {state.failure}") if state.failure else NotReady()
        return JSONResponse({"status": "failed" if state.failure else "loading", "reason": error.message},
                            status_code=503, headers=error.headers)
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/version")
async def version(request: Request) -> JSONResponse:
    info = request.app.state.engine.info()
    return JSONResponse({
        "version": __version__,
        "engine": info.engine,
        "model": info.model_name,
        "max_model_len": info.max_model_len,
        "device": info.device,
        "dtype": info.dtype,
        "dtype_reason": info.dtype_reason,
        "cpu": info.cpu,
        "quantization": info.quantization,
        "max_num_seqs": info.max_num_seqs,
        **{name: version for name, version in (("torch", info.torch), ("vllm", info.vllm),
                                               ("transformers", info.transformers)) if version},
    })
