"""Helpers for async streams: merge n choices, watch for a client that went away, SSE framing."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request

from ..types import GenerationDelta, TokenLogprob

T = TypeVar("T")
log = logging.getLogger("inference.serving")


class ClientDisconnected(Exception):
    """The client closed the connection before the response was ready."""


async def guarded_sse(chunks: AsyncIterator[str], request_id: str) -> AsyncIterator[str]:
    """SSE framing for one response: a failure mid-stream becomes an error chunk, then always [DONE]."""
    from ..errors import InferenceError, error_body

    try:
        async with aclosing(chunks) as inner:  # type: ignore[type-var]
            async for chunk in inner:
                yield chunk
    except InferenceError as exc:
        log.warning("stream %s failed: %s", request_id, exc.message)
        yield sse(error_body(exc))
    except Exception:
        log.exception("stream %s failed", request_id)
        yield sse(error_body(InferenceError("The generation failed inside the server.")))
    yield SSE_DONE


def sse(payload: Any) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


SSE_DONE = "data: [DONE]\n\n"


async def merge_indexed(iterators: list[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """Items of several async iterators as (index, item), as they come. Closing it closes them all."""
    if len(iterators) == 1:
        async with aclosing(iterators[0]) as only:  # type: ignore[type-var]
            async for item in only:
                yield 0, item
        return
    queue: asyncio.Queue[tuple[int, Any, BaseException | None, bool]] = asyncio.Queue()

    async def pump(index: int, iterator: AsyncIterator[T]) -> None:
        try:
            async with aclosing(iterator) as it:  # type: ignore[type-var]
                async for item in it:
                    await queue.put((index, item, None, False))
        except Exception as exc:
            await queue.put((index, None, exc, False))
        finally:
            queue.put_nowait((index, None, None, True))

    tasks = [asyncio.create_task(pump(i, it)) for i, it in enumerate(iterators)]
    remaining = len(tasks)
    try:
        while remaining:
            index, item, error, finished = await queue.get()
            if error is not None:
                raise error
            if finished:
                remaining -= 1
                continue
            yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run `work`; cancel it as soon as the client disconnects (non-streaming requests)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.create_task(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ClientDisconnected()
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


@dataclass
class Collected:
    """Every choice of a non-streamed request, gathered from its indexed deltas."""

    texts: list[str]
    reasons: list[str | None]
    logprobs: list[list[TokenLogprob]]
    completion_tokens: int = 0


async def collect(deltas: AsyncIterator[tuple[int, GenerationDelta]], texts: list[str]) -> Collected:
    """Append each choice's deltas to its starting text (the echo, or ""), until every choice has finished;
    closes `deltas` (the engine stops generating) whatever happens."""
    got = Collected(list(texts), [None] * len(texts), [[] for _ in texts])
    async with aclosing(deltas) as stream:
        async for index, delta in stream:
            got.texts[index] += delta.text
            got.logprobs[index].extend(delta.logprobs)
            if delta.finish_reason is not None:
                got.reasons[index] = delta.finish_reason
                got.completion_tokens += delta.completion_tokens
    return got
