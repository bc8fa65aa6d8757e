"""POST /v1/completions (text completions), with logprobs (the legacy parallel-list shape) and response_format."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from starlette.requests import Request
from starlette.responses import Response

from ..errors import InvalidRequest
from ..protocol import CompletionRequest, CompletionResponse, chunk_payload
from .base import OpenAIServing, new_id
from .logprobs import completion_logprobs
from .streams import collect, merge_indexed, sse
from .tools import structured_of


class ServingCompletion(OpenAIServing):
    def _prompts(self, req: CompletionRequest) -> list[tuple[tuple[int, ...], str]]:
        raw = req.prompt
        if isinstance(raw, str):
            items: list = [raw]
        elif raw and all(isinstance(x, int) for x in raw):
            items = [raw]
        else:
            items = list(raw)
        if not items:
            raise InvalidRequest("prompt must not be empty.", param="prompt")
        prompts = []
        vocab = self.engine.info().vocab_size
        for item in items:
            if isinstance(item, str):
                prompts.append((tuple(self.tokenize_text(item)), item))
            else:
                if not item:
                    raise InvalidRequest("a token prompt must not be empty.", param="prompt")
                if any(t < 0 or (vocab is not None and t >= vocab) for t in item):
                    raise InvalidRequest("prompt holds a token id outside the vocabulary.", param="prompt")
                prompts.append((tuple(item), ""))
        return prompts

    async def create(self, req: CompletionRequest, raw: Request) -> Response:
        self.ensure_ready()
        model = self.check_model(req.model)
        structured = structured_of(req.response_format)
        self.check_structured(structured)
        prompts = self._prompts(req)
        plans = [(ids, text, self.sampling_params(req, len(ids), req.max_tokens, what="prompt",
                                                  logprobs=req.logprobs, structured=structured))
                 for ids, text in prompts]
        request_id = new_id("cmpl")
        include_usage = bool(req.stream and req.stream_options and req.stream_options.include_usage)
        return await self.respond(
            raw, sum(len(p) for _, _, p in plans), request_id, stream=req.stream,
            sse=lambda: self._stream(request_id, model, plans, req.echo, include_usage),
            body=lambda: self._complete(request_id, model, plans, req.echo))

    def _all_choices(self, request_id: str, plans: list) -> AsyncIterator:
        """(choice index, delta) over every prompt x n; choice index = prompt_index * n + j."""
        streams = []
        for p_index, (ids, _, params) in enumerate(plans):
            streams.append(self.run_choices(f"{request_id}-p{p_index}", ids, params))
        offsets = [sum(len(p) for _, _, p in plans[:i]) for i in range(len(plans))]

        async def merged() -> AsyncIterator:
            async for p_index, (j, delta) in merge_indexed(streams):
                yield offsets[p_index] + j, delta

        return merged()

    async def _complete(self, request_id: str, model: str, plans: list, echo: bool) -> dict:
        echoes = [text if echo else "" for ids, text, params in plans for _ in params]
        got = await collect(self._all_choices(request_id, plans), echoes)
        texts, reasons, logprobs, completion = got.texts, got.reasons, got.logprobs, got.completion_tokens
        prompt_tokens = sum(len(ids) for ids, _, _ in plans)
        wanted = req_logprobs(plans)
        return CompletionResponse.model_validate({
            "id": request_id, "model": model,
            "choices": [{"index": i, "text": t, "finish_reason": r,
                         "logprobs": completion_logprobs(logprobs[i], len(echoes[i])) if wanted else None}
                        for i, (t, r) in enumerate(zip(texts, reasons))],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                      "total_tokens": prompt_tokens + completion},
        }).model_dump()

    async def _stream(self, request_id: str, model: str, plans: list, echo: bool,
                      include_usage: bool) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(choices: list[dict], usage: dict | None = None) -> str:
            return sse(chunk_payload(id=request_id, created=created, model=model, object="text_completion",
                                     choices=choices, usage=usage, include_usage=include_usage))

        completion = 0
        wanted = req_logprobs(plans)
        offsets = [0] * sum(len(p) for _, _, p in plans)  # where the next token starts in each choice's text
        if echo:
            index = 0
            for _, text, params in plans:
                for _ in params:
                    yield chunk([{"index": index, "text": text, "logprobs": None, "finish_reason": None}])
                    offsets[index] = len(text)
                    index += 1
        async with aclosing(self._all_choices(request_id, plans)) as deltas:
            async for index, delta in deltas:
                if delta.finish_reason is not None:
                    completion += delta.completion_tokens
                if delta.text or delta.finish_reason is not None or delta.logprobs:
                    lp = completion_logprobs(delta.logprobs, offsets[index]) if wanted else None
                    offsets[index] += sum(len(t.token) for t in delta.logprobs)
                    yield chunk([{"index": index, "text": delta.text, "logprobs": lp,
                                  "finish_reason": delta.finish_reason}])
        if include_usage:
            prompt_tokens = sum(len(ids) for ids, _, _ in plans)
            yield chunk([], {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                             "total_tokens": prompt_tokens + completion})


def req_logprobs(plans: list) -> bool:
    """Whether the request asked for logprobs (every choice's params say the same)."""
    return any(p.logprobs is not None for _, _, params in plans for p in params)
