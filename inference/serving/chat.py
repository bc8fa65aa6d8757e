"""POST /v1/chat/completions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from starlette.requests import Request
from starlette.responses import Response

from ..errors import InvalidRequest
from ..protocol import (AssistantMessage, ChatChoice, ChatCompletionRequest, ChatCompletionResponse, Usage,
                        chunk_payload)
from ..types import ChatTurn, SamplingParams
from .base import OpenAIServing, new_id
from .streams import sse


def chat_turns(req_messages: list) -> list[ChatTurn]:
    return [ChatTurn("system" if m.role == "developer" else m.role, m.text()) for m in req_messages]


class ServingChat(OpenAIServing):
    async def create(self, req: ChatCompletionRequest, raw: Request) -> Response:
        self.ensure_ready()
        model = self.check_model(req.model)
        if req.logprobs:
            raise InvalidRequest("logprobs are not supported by this server.", param="logprobs")
        prompt = tuple(self.tokenize_chat(chat_turns(req.messages)))
        params = self.sampling_params(req, len(prompt), req.max_completion_tokens or req.max_tokens)
        request_id = new_id("chatcmpl")
        include_usage = bool(req.stream and req.stream_options and req.stream_options.include_usage)
        return await self.respond(
            raw, len(params), request_id, stream=req.stream,
            sse=lambda: self._stream(request_id, model, prompt, params, include_usage),
            body=lambda: self._complete(request_id, model, prompt, params))

    async def _complete(self, request_id: str, model: str, prompt: tuple[int, ...],
                        params: list[SamplingParams]) -> dict:
        texts = [""] * len(params)
        reasons: list[str | None] = [None] * len(params)
        completion = 0
        async with aclosing(self.run_choices(request_id, prompt, params)) as deltas:
            async for index, delta in deltas:
                texts[index] += delta.text
                if delta.finish_reason is not None:
                    reasons[index] = delta.finish_reason
                    completion += delta.completion_tokens
        response = ChatCompletionResponse(
            id=request_id, model=model,
            choices=[ChatChoice(index=i, message=AssistantMessage(content=t), finish_reason=r)
                     for i, (t, r) in enumerate(zip(texts, reasons))],
            usage=Usage(prompt_tokens=len(prompt), completion_tokens=completion,
                        total_tokens=len(prompt) + completion),
        )
        return response.model_dump()

    async def _stream(self, request_id: str, model: str, prompt: tuple[int, ...], params: list[SamplingParams],
                      include_usage: bool) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(choices: list[dict], usage: dict | None = None) -> str:
            return sse(chunk_payload(id=request_id, created=created, model=model, object="chat.completion.chunk",
                                     choices=choices, usage=usage, include_usage=include_usage))

        completion = 0
        for index in range(len(params)):
            yield chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None}])
        async with aclosing(self.run_choices(request_id, prompt, params)) as deltas:
            async for index, delta in deltas:
                if delta.text:
                    yield chunk([{"index": index, "delta": {"content": delta.text}, "logprobs": None,
                                  "finish_reason": None}])
                if delta.finish_reason is not None:
                    completion += delta.completion_tokens
                    yield chunk([{"index": index, "delta": {}, "logprobs": None,
                                  "finish_reason": delta.finish_reason}])
        if include_usage:
            yield chunk([], {"prompt_tokens": len(prompt), "completion_tokens": completion,
                             "total_tokens": len(prompt) + completion})
