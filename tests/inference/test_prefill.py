"""Chunked prefill: the step plan (no model), and on the real model the same tokens as a one-shot prefill
with prompts chunked, whole and mixed, arriving together and one after another."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

import pytest

from inference.engines.prefill import Chunked, plan_step
from inference.types import ChatTurn, GenerationRequest, SamplingParams

from .helpers import running_engine


@dataclass(eq=False)
class _Seq:
    prompt_len: int


def test_whole_prompts_share_the_budget_in_order() -> None:
    waiting = deque([_Seq(10), _Seq(20), _Seq(30), _Seq(5)])
    plan = plan_step(waiting, None, free_slots=8, budget=40)
    assert [s.prompt_len for s in plan.whole] == [10, 20] and plan.start is None and plan.chunk == 0
    assert [s.prompt_len for s in waiting] == [30, 5]  # the one that does not fit waits; nothing overtakes it


def test_a_prompt_larger_than_the_budget_starts_chunked_alone() -> None:
    waiting = deque([_Seq(100), _Seq(5)])
    plan = plan_step(waiting, None, free_slots=8, budget=40)
    assert plan.start is not None and plan.start.prompt_len == 100 and plan.chunk == 40 and not plan.whole


def test_the_running_chunk_goes_first_and_short_prompts_fill_the_rest() -> None:
    chunked = Chunked(seq=_Seq(100), cache=None, done=80)
    waiting = deque([_Seq(15), _Seq(10)])
    plan = plan_step(waiting, chunked, free_slots=8, budget=40)
    assert plan.chunk == 20 and [s.prompt_len for s in plan.whole] == [15] and plan.start is None
    assert plan_step(deque([_Seq(500)]), chunked, free_slots=8, budget=40).start is None  # one chunked at a time


def test_free_slots_bound_admission() -> None:
    waiting = deque([_Seq(1), _Seq(1), _Seq(1)])
    assert len(plan_step(waiting, None, free_slots=2, budget=100).whole) == 2


@pytest.fixture(scope="module")
def engine():
    with running_engine(max_num_seqs=4, max_model_len=512, max_prefill_tokens=48, prefix_cache_mb=0) as eng:
        yield eng


PROMPTS = ["hi", ("Explain gravity to a child in three sentences, with an example, and then a second example "
                 "about the moon and the tides, and a third one about a falling apple."), "What is 2 + 2?",
           "Write a haiku about the sea.", "List three colours, one per line, and say why you like each of them."]


def _reference(engine, ids: list[int], max_tokens: int) -> str:
    import torch

    out = engine._model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False)
    return engine._tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


@pytest.mark.slow
@pytest.mark.parametrize("gap_s", [0.0, 0.3], ids=["together", "staggered"])
def test_chunked_and_whole_prefill_give_one_shot_tokens(engine, gap_s: float) -> None:
    ids = [engine.tokenize_chat([ChatTurn("user", p)]) for p in PROMPTS]
    assert max(len(i) for i in ids) > 48 >= min(len(i) for i in ids)  # some prompts chunked, some whole
    max_tokens = 72  # past the cache's first slack (64 columns): the buffer grows mid-stream

    async def run(i: int) -> str:
        await asyncio.sleep(gap_s * i)
        text = ""
        async for delta in engine.generate(GenerationRequest(f"c{i}", tuple(ids[i]),
                                                             SamplingParams(max_tokens=max_tokens, temperature=0.0))):
            text += delta.text
        return text

    async def all_of_them() -> list[str]:
        return await asyncio.gather(*(run(i) for i in range(len(PROMPTS))))

    before = engine.stats()
    texts = asyncio.run(all_of_them())
    for i, text in enumerate(texts):
        assert text == _reference(engine, ids[i], max_tokens), PROMPTS[i]
    after = engine.stats()
    assert after.prefills_total - before.prefills_total > len(PROMPTS)  # chunks are prefill steps of their own
    assert after.running == 0 and after.waiting == 0


@pytest.mark.slow
def test_a_chunked_prompt_can_be_cancelled(engine) -> None:
    ids = tuple(engine.tokenize_chat([ChatTurn("user", PROMPTS[1] * 4)]))

    async def run() -> int:
        agen = engine.generate(GenerationRequest("gone", ids, SamplingParams(max_tokens=50)))
        task = asyncio.ensure_future(agen.__anext__())
        await asyncio.sleep(0.05)  # mid-prefill
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, StopAsyncIteration):
            pass
        await agen.aclose()
        for _ in range(200):
            if engine.stats().running == 0:
                break
            await asyncio.sleep(0.05)
        return engine.stats().running

    assert asyncio.run(run()) == 0
    text = ""

    async def after() -> None:
        nonlocal text
        async for delta in engine.generate(GenerationRequest("next", ids, SamplingParams(max_tokens=8, temperature=0))):
            text += delta.text

    asyncio.run(after())
    assert text == _reference(engine, list(ids), 8)
