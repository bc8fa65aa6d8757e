"""A fake engine for serving-layer unit tests (the seam behind the Engine protocol)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from inference.app import create_app
from inference.engines.errors import GenerationFailed
from inference.settings import InferenceSettings
from inference.types import (ChatTurn, EngineInfo, EngineStats, GenerationDelta, GenerationRequest, ParsedToolCalls,
                             StructuredOutput)

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]


class NoGpu:
    """A GpuMonitor with no GPU."""

    available = False

    def read(self) -> list:
        return []

    def close(self) -> None:
        pass


class FakeEngine:
    def __init__(self, *, delay: float = 0.0, fail_after: int | None = None, max_model_len: int = 64,
                 start_delay: float = 0.0) -> None:
        self.delay = delay
        self.fail_after = fail_after
        self.max_model_len = max_model_len
        self.start_delay = start_delay
        self.started = False
        self.closed = False
        self.running: set[str] = set()
        self.aborted: list[str] = []
        self.requests: list[GenerationRequest] = []

    async def start(self) -> None:
        await asyncio.sleep(self.start_delay)
        self.started = True

    async def close(self) -> None:
        self.closed = True

    def info(self) -> EngineInfo:
        return EngineInfo(engine="fake", model_name="fake-model", model_path="/nowhere",
                          max_model_len=self.max_model_len, device="cpu", dtype="none", max_num_seqs=2)

    def stats(self) -> EngineStats:
        return EngineStats(running=len(self.running), aborted_total=len(self.aborted))

    async def health(self) -> bool:
        return self.started and not self.closed

    def tokenize_chat(self, turns: Sequence[ChatTurn], add_generation_prompt: bool = True,
                      tools: Sequence[dict] | None = None) -> list[int]:
        return [len(w) for t in turns for w in t.content.split()] + ([0] if add_generation_prompt else [])

    def tokenize_text(self, text: str) -> list[int]:
        return [len(w) for w in text.split()]

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return " ".join(WORDS[t % len(WORDS)] for t in token_ids)

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        return [WORDS[t % len(WORDS)] for t in token_ids]

    def check_structured(self, spec: StructuredOutput) -> None:
        pass

    def parse_tool_calls(self, text: str) -> ParsedToolCalls:
        return ParsedToolCalls(text)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        self.requests.append(request)
        self.running.add(request.request_id)
        done = False
        try:
            for i in range(request.params.max_tokens):
                if self.fail_after is not None and i == self.fail_after:
                    raise GenerationFailed("generation failed: boom")
                await asyncio.sleep(self.delay)
                last = i + 1 == request.params.max_tokens
                done = last
                yield GenerationDelta(text=WORDS[i % len(WORDS)] + " ", prompt_tokens=len(request.prompt_token_ids),
                                      completion_tokens=i + 1, finish_reason="length" if last else None)
        finally:
            self.running.discard(request.request_id)
            if not done:
                self.aborted.append(request.request_id)


@asynccontextmanager
async def started_app(engine: FakeEngine | None = None,
                      **settings: object) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app on a fake engine, its lifespan entered and the model loaded (within 1 s), and a client on it."""
    settings.setdefault("warmup", False)
    app = create_app(InferenceSettings(served_model_name="fake-model", **settings), engine or FakeEngine(),
                     gpus=NoGpu())
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                   base_url="http://test") as client:
        for _ in range(100):
            if app.state.server_state.ready:
                break
            await asyncio.sleep(0.01)
        yield app, client
