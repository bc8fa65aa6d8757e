"""One request inside the transformers engine: what it has generated, and the rule that ends it (EOS, a stop
string, max_tokens, the context window), each accepted token turned into the delta its stream gets."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import torch

from ..types import GenerationDelta, GenerationRequest, TokenLogprob
from .detokenizer import IncrementalDetokenizer
from .prefix_cache import Hit


@dataclass(eq=False)
class SequenceState:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[GenerationDelta | BaseException]
    detok: IncrementalDetokenizer
    generator: torch.Generator | None
    matcher: Any = None  # xgrammar GrammarMatcher of a constrained sequence
    prefix: Hit | None = None  # the cached prefix it started from (prefix_cache.py)
    looked_up: bool = False  # in the prefix cache
    generated: list[int] = field(default_factory=list)
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)  # not yet sent in a delta
    reported: int = 0  # completion tokens already reported in a delta
    aborted: bool = False
    done: bool = False

    @property
    def prompt_len(self) -> int:
        return len(self.request.prompt_token_ids)

    def accept(self, token: int, eos: frozenset[int], max_model_len: int) -> GenerationDelta | None:
        """Record one sampled token; the delta to send, if any (`done` is set when this token ends it)."""
        params = self.request.params
        self.generated.append(token)
        count = len(self.generated)
        finish = None
        if self.matcher is not None and not self.matcher.is_terminated():
            self.matcher.accept_token(token)
        if token in eos and not params.ignore_eos:
            finish, text = "stop", self.detok.flush()
        else:
            text, hit = self.detok.push(token)
            if hit:
                finish = "stop"
            elif count >= params.max_tokens or self.prompt_len + count >= max_model_len:
                finish = "length"
                text += self.detok.flush()
        delta = None
        if text or finish:
            delta = GenerationDelta(text=text, prompt_tokens=self.prompt_len, completion_tokens=count,
                                    new_tokens=count - self.reported, finish_reason=finish,
                                    logprobs=tuple(self.pending_logprobs))
            self.reported = count
            self.pending_logprobs.clear()
        if finish:
            self.done = True
        return delta


def settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    """In the event loop: the engine's start() learns how loading went."""
    if future.done():  # start() was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def put_all(outbox: list[tuple[SequenceState, GenerationDelta | BaseException]]) -> None:
    """In the event loop: one engine step's deltas (or errors) into their streams' queues."""
    for seq, item in outbox:
        seq.queue.put_nowait(item)
