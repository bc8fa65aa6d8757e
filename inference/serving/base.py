"""What chat and text completions share: readiness, model check, limits, sampling, metrics.

Sampling defaults: a request's unset temperature / top_p / top_k / repetition_penalty come from the model
folder's generation_config.json when `generation_config` is "auto" (vLLM's default), else the neutral ones.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import TypeVar

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..engines.base import Engine
from ..engines.loading import generation_defaults
from ..errors import ContextLengthExceeded, InvalidRequest, ModelNotFound, NotReady
from ..metrics import Metrics
from ..protocol import _SamplingFields
from ..settings import InferenceSettings
from ..types import (
    ChatTurn,
    GenerationDelta,
    GenerationRequest,
    LoopGuardParams,
    SamplingParams,
    StructuredOutput,
)
from .admission import AdmissionController, Slot
from .drain import Drain
from .errors import engine_errors
from .loop_guard import LoopGuard
from .streams import guarded_sse, merge_indexed, unless_disconnected

T = TypeVar("T")
log = logging.getLogger("inference.serving")


@dataclass
class ServerState:
    drain: Drain
    ready: bool = False
    failure: str | None = None


@dataclass
class RequestClock:
    """Per-sequence timing for TTFT / ITL / E2E metrics."""

    arrival: float = field(default_factory=time.perf_counter)
    first: float | None = None
    last: float | None = None


class OpenAIServing:
    def __init__(self, engine: Engine, settings: InferenceSettings, metrics: Metrics,
                 admission: AdmissionController, state: ServerState) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.admission = admission
        self.state = state
        self.defaults: dict[str, float] = (generation_defaults(settings.model_path)
                                           if settings.generation_config == "auto" else {})

    # ---- checks ----------------------------------------------------------------------

    def ensure_ready(self) -> None:
        self.state.drain.refuse_new()
        if not self.state.ready:
            if self.state.failure:
                raise NotReady(f"The model failed to load: {self.state.failure}")
            raise NotReady()

    def check_model(self, requested: str | None) -> str:
        served = self.settings.model_name
        if requested is not None and requested != served:
            raise ModelNotFound(f"The model '{requested}' does not exist; this server serves '{served}'.",
                                param="model")
        return served

    @property
    def max_model_len(self) -> int:
        return self.engine.info().max_model_len

    # ---- the engine, its errors mapped to HTTP errors ---------------------------------

    def tokenize_chat(self, turns: list[ChatTurn], add_generation_prompt: bool = True,
                      tools: Sequence[dict] | None = None) -> list[int]:
        with engine_errors():
            if tools:
                return self.engine.tokenize_chat(turns, add_generation_prompt, tools=tools)
            return self.engine.tokenize_chat(turns, add_generation_prompt)

    def check_structured(self, spec: StructuredOutput | None) -> None:
        if spec is not None:
            with engine_errors():
                self.engine.check_structured(spec)

    def tokenize_text(self, text: str) -> list[int]:
        with engine_errors():
            return self.engine.tokenize_text(text)

    def sampling_params(self, req: _SamplingFields, prompt_len: int, max_tokens: int | None,
                        what: str = "messages", *, logprobs: int | None = None,
                        structured: StructuredOutput | None = None) -> list[SamplingParams]:
        """One SamplingParams per choice (n), after the context-length check."""
        limit = self.max_model_len
        if prompt_len == 0:
            raise InvalidRequest(f"The {what} is empty after tokenization.", param=what)
        if prompt_len >= limit:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {limit} tokens. However, your {what} resulted in "
                f"{prompt_len} tokens. Please reduce the length of the {what}.", param=what)
        if max_tokens is None:
            max_tokens = min(self.settings.default_max_tokens, limit - prompt_len)
        elif prompt_len + max_tokens > limit:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_len + max_tokens} tokens ({prompt_len} in the {what}, {max_tokens} in the completion). "
                f"Please reduce the length of the {what} or completion.", param="max_tokens")
        if req.n > self.settings.max_num_seqs:
            raise InvalidRequest(f"n={req.n} exceeds this server's max_num_seqs={self.settings.max_num_seqs}.",
                                 param="n")
        defaults = self.defaults
        guard = req.loop_guard
        top_k = req.top_k if req.top_k is not None else int(defaults.get("top_k", 0))
        base = SamplingParams(
            max_tokens=max_tokens,
            temperature=float(defaults.get("temperature", 1.0)) if req.temperature is None else req.temperature,
            top_p=float(defaults.get("top_p", 1.0)) if req.top_p is None else req.top_p,
            top_k=max(0, top_k),
            repetition_penalty=(float(defaults.get("repetition_penalty", 1.0)) if req.repetition_penalty is None
                                else req.repetition_penalty),
            logprobs=logprobs,
            structured=structured,
            seed=req.seed,
            stop=req.stop_list(),
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
            ignore_eos=req.ignore_eos,
            loop_guard=LoopGuardParams(guard.ngram, guard.repeats) if guard else None,
        )
        if req.n == 1:
            return [base]
        return [replace(base, seed=None if base.seed is None else base.seed + i) for i in range(req.n)]

    # ---- generation ------------------------------------------------------------------

    async def run_choices(self, request_id: str, prompt: tuple[int, ...],
                          params: list[SamplingParams]) -> AsyncIterator[tuple[int, GenerationDelta]]:
        """Deltas of every choice as (choice index, delta), with the request's metrics recorded."""
        self.metrics.prompt_tokens.inc(len(prompt))
        clocks = [RequestClock() for _ in params]
        iterators = [self.engine.generate(GenerationRequest(f"{request_id}-{i}", prompt, p)) for i, p in enumerate(params)]
        iterators = [guarded(it, p.loop_guard) if p.loop_guard else it for it, p in zip(iterators, params)]
        with engine_errors():
            async for index, delta in merge_indexed(iterators):
                self._observe(clocks[index], delta)
                yield index, delta
                self.state.drain.check_deadline()

    async def respond(self, raw: Request, sequences: int, request_id: str, *, stream: bool,
                      sse: Callable[[], AsyncIterator[str]], body: Callable[[], Awaitable[dict]]) -> Response:
        """The one response path of chat and text completions: admit `sequences`, then answer with SSE
        events (`sse`) or one JSON body (`body`).

        The admission slot is released in one place, `_holding`, when the work that needs it is over:
        for JSON once the body is built (every sequence has finished or, the client gone, been
        cancelled; the next request need not wait for the bytes to be sent); for SSE when the whole
        ASGI response is over, however it ends (last event, error chunk, client gone), which also
        covers a stream whose body iterator never started (a `finally` inside the generator would
        not run then).
        """
        slot = self.admission.acquire(sequences)
        if stream:
            return _SSEResponse(guarded_sse(sse(), request_id), slot)
        return JSONResponse(await _holding(slot, unless_disconnected(raw, body())))

    def _observe(self, clock: RequestClock, delta: GenerationDelta) -> None:
        now = time.perf_counter()
        if clock.first is None:
            clock.first = now
            self.metrics.ttft.observe(now - clock.arrival)
        elif clock.last is not None and delta.new_tokens > 0:
            gap = (now - clock.last) / delta.new_tokens
            for _ in range(delta.new_tokens):
                self.metrics.itl.observe(gap)
        clock.last = now
        self.metrics.generation_tokens.inc(delta.new_tokens)
        if delta.finish_reason is not None:
            self.metrics.finish(delta.finish_reason, e2e=now - clock.arrival, decode=now - clock.first,
                                prompt_tokens=delta.prompt_tokens, generation_tokens=delta.completion_tokens)


async def guarded(deltas: AsyncIterator[GenerationDelta], guard: LoopGuardParams) -> AsyncIterator[GenerationDelta]:
    """The engine's deltas under a loop guard: the delta that trips it is the last (finish_reason "stop"), and
    the engine's iterator is closed (here, or when this one is closed), which cancels the generation."""
    watch = LoopGuard(guard)
    async with aclosing(deltas) as inner:  # type: ignore[type-var]
        async for delta in inner:
            if delta.finish_reason is None and watch.feed(delta.text):
                yield replace(delta, finish_reason="stop")
                return
            yield delta


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"



async def _holding(slot: Slot, work: Awaitable[T]) -> T:
    """Await `work` while holding the admission slot: the one place a slot is released."""
    try:
        return await work
    finally:
        slot.release()


class _SSEResponse(StreamingResponse):
    """An SSE response that holds its admission slot for as long as it is being sent."""

    def __init__(self, events: AsyncIterator[str], slot: Slot) -> None:
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _holding(self._slot, super().__call__(scope, receive, send))
