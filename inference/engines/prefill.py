"""Chunked prefill: which prompt tokens one engine step prefills, so running streams keep their pace.

Each engine step prefills at most `max_prefill_tokens` prompt tokens (vLLM's --max-num-batched-tokens)
and then decodes one token for every running sequence. Waiting prompts that fit in what is left of
that budget are prefilled whole, together (one left-padded forward); a prompt that does not fit is
prefilled in chunks, one chunk a step, into its own cache (`Chunked`), between the running batch's
decode steps, and joins the batch after its last chunk. vLLM's chunked prefill is the reference;
unlike vLLM the chunk and the decode rows are two forwards (the Hugging Face model takes one query
length per batch), so a step costs the chunk's prefill plus one decode step, never a whole long prompt.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(eq=False)
class Chunked:
    """A sequence whose prompt is being prefilled chunk by chunk into its own cache."""

    seq: Any  # the engine's sequence (request.prompt_token_ids, prompt_len)
    cache: Any  # a transformers DynamicCache
    done: int = 0  # prompt tokens already in the cache

    @property
    def remaining(self) -> int:
        return self.seq.prompt_len - self.done

    def inputs(self, size: int, device: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """input_ids [1, size], attention mask [1, done + size], position ids [1, size] of the next chunk."""
        ids = torch.tensor([self.seq.request.prompt_token_ids[self.done:self.done + size]], dtype=torch.long)
        mask = torch.ones((1, self.done + size), dtype=torch.long)
        positions = torch.arange(self.done, self.done + size, dtype=torch.long).unsqueeze(0)
        return ids.to(device), mask.to(device), positions.to(device)


@dataclass
class Plan:
    whole: list[Any] = field(default_factory=list)  # sequences prefilled whole this step, together
    start: Any = None  # a waiting sequence that starts chunked this step
    chunk: int = 0  # tokens of the chunked sequence's next chunk this step


def plan_step(waiting: deque[Any], chunked: Chunked | None, free_slots: int, budget: int) -> Plan:
    """Take this step's prefill work off the front of `waiting` (in order): the running chunked prompt's
    next chunk first, then whole prompts while they fit in the budget; a prompt larger than what is left
    starts chunked only when nothing else is prefilled this step (else it waits for the next step)."""
    plan = Plan()
    if chunked is not None:
        plan.chunk = min(chunked.remaining, budget)
        budget -= plan.chunk
    while waiting and free_slots > 0 and budget > 0:
        seq = waiting[0]
        if seq.prompt_len <= budget:
            plan.whole.append(waiting.popleft())
            budget -= seq.prompt_len
            free_slots -= 1
        elif chunked is None and not plan.whole:
            plan.start = waiting.popleft()
            plan.chunk = budget
            break
        else:
            break
    return plan
