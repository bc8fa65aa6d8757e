"""The continuous-batching engine on the real model: same tokens as plain generate(), joins mid-flight."""

from __future__ import annotations

import asyncio

import pytest

from inference.types import ChatTurn, GenerationRequest, SamplingParams

from .helpers import running_engine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    with running_engine(max_num_seqs=4, max_model_len=512) as eng:
        yield eng


PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "hi",
           "Explain gravity to a child in three sentences, with an example.", "List three colours.",
           "What is 2 + 2?"]


def test_batched_greedy_equals_sequential_generate(engine) -> None:
    import torch

    ids = [engine.tokenize_chat([ChatTurn("user", p)]) for p in PROMPTS]

    async def run(i: int) -> str:
        await asyncio.sleep(0.15 * i)  # staggered: later requests join a running batch; 6 > 4 slots: some wait
        text = ""
        async for delta in engine.generate(GenerationRequest(f"r{i}", tuple(ids[i]),
                                                             SamplingParams(max_tokens=32, temperature=0.0))):
            text += delta.text
        return text

    async def all_of_them() -> list[str]:
        return await asyncio.gather(*(run(i) for i in range(len(PROMPTS))))

    before = engine.stats()
    texts = asyncio.run(all_of_them())
    after = engine.stats()
    for i, text in enumerate(texts):
        out = engine._model.generate(torch.tensor([ids[i]]), max_new_tokens=32, do_sample=False)
        assert text == engine._tokenizer.decode(out[0, len(ids[i]):], skip_special_tokens=True), PROMPTS[i]
    assert after.max_batch_size == 4  # never more than max_num_seqs
    assert after.prefills_total - before.prefills_total >= 2  # requests joined at different steps
    assert after.running == 0 and after.waiting == 0


def test_abort_frees_the_slot(engine) -> None:
    ids = tuple(engine.tokenize_chat([ChatTurn("user", "Tell me a long story.")]))

    async def run() -> int:
        agen = engine.generate(GenerationRequest("long", ids, SamplingParams(max_tokens=400, ignore_eos=True)))
        got = 0
        async for _ in agen:
            got += 1
            if got == 3:
                break
        await agen.aclose()
        for _ in range(100):
            if engine.stats().running == 0:
                break
            await asyncio.sleep(0.02)
        return engine.stats().running

    before = engine.stats().aborted_total
    assert asyncio.run(run()) == 0
    assert engine.stats().aborted_total == before + 1


def test_max_model_len_ends_with_length(engine) -> None:
    ids = tuple(engine.tokenize_chat([ChatTurn("user", "word " * 470)]))

    async def run() -> tuple[str | None, int]:
        last = None
        async for delta in engine.generate(GenerationRequest("edge", ids, SamplingParams(max_tokens=10_000,
                                                                                           ignore_eos=True))):
            last = delta
        return last.finish_reason, last.completion_tokens

    reason, count = asyncio.run(run())
    assert reason == "length" and len(ids) + count == 512
