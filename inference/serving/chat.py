"""POST /v1/chat/completions: response_format, tools / tool_choice and logprobs included (serving/tools.py,
serving/logprobs.py). With tools in play ("auto", "required", a named function) a stream sends the text
once the choice is finished, as content or as tool_calls: a call can only be told from text at its end."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from starlette.requests import Request
from starlette.responses import Response

from ..protocol import ChatCompletionRequest, ChatCompletionResponse, chunk_payload
from ..types import SamplingParams, TokenLogprob
from .base import OpenAIServing, new_id
from .logprobs import chat_logprobs, chat_request_logprobs
from .streams import collect, sse
from .tools import ToolPlan, chat_turns, constraint, plan_tools, tool_calls, wire_calls

__all__ = ["ServingChat", "chat_turns"]


class ServingChat(OpenAIServing):
    async def create(self, req: ChatCompletionRequest, raw: Request) -> Response:
        self.ensure_ready()
        model = self.check_model(req.model)
        logprobs = chat_request_logprobs(req.logprobs, req.top_logprobs)
        plan = plan_tools(req)
        structured = constraint(req, plan)
        prompt = tuple(self.tokenize_chat(chat_turns(req.messages), tools=plan.tools or None))
        self.check_structured(structured)
        params = self.sampling_params(req, len(prompt), req.max_completion_tokens or req.max_tokens,
                                      logprobs=logprobs, structured=structured)
        request_id = new_id("chatcmpl")
        include_usage = bool(req.stream and req.stream_options and req.stream_options.include_usage)
        return await self.respond(
            raw, len(params), request_id, stream=req.stream,
            sse=lambda: self._stream(request_id, model, prompt, params, plan, include_usage),
            body=lambda: self._complete(request_id, model, prompt, params, plan))

    def _finish(self, plan: ToolPlan, text: str, reason: str | None) -> tuple[dict, str | None]:
        """The message of a finished choice and its finish_reason ("tool_calls" when it called tools)."""
        parsed = tool_calls(plan, text, self.engine.parse_tool_calls)
        message = {"role": "assistant", "content": parsed.content, "refusal": None,
                   "tool_calls": wire_calls(parsed.calls)}
        return message, ("tool_calls" if parsed.calls and reason == "stop" else reason)

    async def _complete(self, request_id: str, model: str, prompt: tuple[int, ...],
                        params: list[SamplingParams], plan: ToolPlan) -> dict:
        got = await collect(self.run_choices(request_id, prompt, params), [""] * len(params))
        texts, reasons, logprobs, completion = got.texts, got.reasons, got.logprobs, got.completion_tokens
        choices = []
        for i, (text, reason) in enumerate(zip(texts, reasons)):
            message, finish = self._finish(plan, text, reason)
            choices.append({"index": i, "message": message, "finish_reason": finish,
                            "logprobs": chat_logprobs(logprobs[i]) if params[i].logprobs is not None else None})
        response = ChatCompletionResponse.model_validate({
            "id": request_id, "model": model, "choices": choices,
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": completion,
                      "total_tokens": len(prompt) + completion}})
        return response.model_dump()

    async def _stream(self, request_id: str, model: str, prompt: tuple[int, ...], params: list[SamplingParams],
                      plan: ToolPlan, include_usage: bool) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(choices: list[dict], usage: dict | None = None) -> str:
            return sse(chunk_payload(id=request_id, created=created, model=model, object="chat.completion.chunk",
                                     choices=choices, usage=usage, include_usage=include_usage))

        def logprobs_of(index: int, tokens: tuple[TokenLogprob, ...]) -> dict | None:
            return chat_logprobs(tokens) if params[index].logprobs is not None else None

        held = plan.mode != "none"  # tool calls possible: the text is sent when the choice ends
        texts = [""] * len(params)
        completion = 0
        for index in range(len(params)):
            yield chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None}])
        async with aclosing(self.run_choices(request_id, prompt, params)) as deltas:
            async for index, delta in deltas:
                if held:
                    texts[index] += delta.text
                    if delta.logprobs:
                        yield chunk([{"index": index, "delta": {}, "logprobs": logprobs_of(index, delta.logprobs),
                                      "finish_reason": None}])
                elif delta.text or delta.logprobs:
                    yield chunk([{"index": index, "delta": {"content": delta.text},
                                  "logprobs": logprobs_of(index, delta.logprobs), "finish_reason": None}])
                if delta.finish_reason is not None:
                    completion += delta.completion_tokens
                    finish: str | None = delta.finish_reason
                    if held:
                        message, finish = self._finish(plan, texts[index], delta.finish_reason)
                        body = {"content": message["content"]} if message["content"] else {}
                        if message["tool_calls"]:
                            body["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
                        if body:
                            yield chunk([{"index": index, "delta": body, "logprobs": None, "finish_reason": None}])
                    yield chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": finish}])
        if include_usage:
            yield chunk([], {"prompt_tokens": len(prompt), "completion_tokens": completion,
                             "total_tokens": len(prompt) + completion})
