"""Prefix caching in the transformers engine: the cache's rules (no model), and on the real model a chat's next
turn that starts from the cached conversation gives the tokens of a one-shot generation."""

from __future__ import annotations

import asyncio

import pytest
import torch

from inference.engines.prefix_cache import MIN_HIT_TOKENS, PrefixCache
from inference.types import ChatTurn, GenerationRequest, SamplingParams

from .helpers import running_engine


def _kv(n: int, layers: int = 2) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return ([torch.randn(1, 2, n, 4) for _ in range(layers)], [torch.randn(1, 2, n, 4) for _ in range(layers)])


def _store(cache: PrefixCache, tokens: list[int], prompt_len: int | None = None, source=None) -> None:
    cache.store(tokens, prompt_len or len(tokens), *_kv(len(tokens)), source=source)


def test_the_longest_common_prefix_wins_and_one_prompt_token_is_left_to_run() -> None:
    cache = PrefixCache(1 << 20)
    _store(cache, list(range(40)))
    _store(cache, [*range(30), 99, 98])
    hit = cache.lookup([*range(40), 7, 8])
    assert hit is not None and hit.length == 40
    assert cache.lookup(list(range(40))).length == 39  # the same prompt again: its last token runs
    assert cache.lookup([*range(MIN_HIT_TOKENS - 1), 500, 501]) is None  # too short a match
    assert cache.lookup([500, *range(60)]) is None  # shares no beginning
    assert cache.queried_tokens == 42 + 40 + MIN_HIT_TOKENS + 1 + 61 and cache.hit_tokens == 40 + 39


def test_restore_copies_the_prefix_into_an_empty_cache() -> None:
    from transformers import DynamicCache

    cache = PrefixCache(1 << 20)
    keys, values = _kv(40)
    cache.store(list(range(40)), 30, keys, values)
    hit = cache.lookup([*range(25), 77])
    assert hit is not None and hit.length == 25
    restored = DynamicCache()
    cache.restore(hit, restored)
    assert restored.get_seq_length() == 25
    assert torch.equal(restored.layers[1].keys, keys[1][:, :, :25])
    restored.update(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4), 0)  # growing the copy ...
    assert hit.entry.keys[0].shape[2] == 40  # ... leaves the entry as it was


def test_entries_are_bounded_by_bytes_oldest_unused_first() -> None:
    per_entry = sum(t.nbytes for pair in _kv(20) for t in pair)
    cache = PrefixCache(per_entry * 2)
    for start in (0, 1000, 2000):
        _store(cache, list(range(start, start + 20)))
    assert len(cache) == 2 and cache.bytes <= per_entry * 2
    assert cache.lookup([*range(20), 5]) is None  # the oldest went
    cache.lookup([*range(1000, 1020), 5])  # used: now the newest
    _store(cache, list(range(3000, 3020)))
    assert cache.lookup([*range(1000, 1020), 5]) is not None and cache.lookup([*range(2000, 2020), 5]) is None
    PrefixCache(per_entry // 2).store(list(range(20)), 20, *_kv(20))  # larger than the whole cache: not kept


def test_a_conversations_next_turn_replaces_its_entry_another_users_does_not() -> None:
    system = list(range(20))
    cache = PrefixCache(1 << 20)
    _store(cache, [*system, 100, 101, 102], prompt_len=22)  # alice's first turn: prompt 22, answer 1 kept
    alice = cache.lookup([*system, 100, 101, 102, 103, 104])
    assert alice is not None and alice.length == 23
    _store(cache, [*system, 100, 101, 102, 103, 104, 105], prompt_len=25, source=alice)
    assert len(cache) == 1  # alice's conversation: one entry
    bob = cache.lookup([*system, 200, 201])
    assert bob is not None and bob.length == 20  # the system prompt only
    _store(cache, [*system, 200, 201, 202], prompt_len=22, source=bob)
    assert len(cache) == 2  # alice's entry stays


def test_off_keeps_nothing() -> None:
    cache = PrefixCache(0)
    _store(cache, list(range(40)))
    assert not cache.enabled and len(cache) == 0 and cache.lookup([*range(40), 1]) is None


@pytest.fixture(scope="module")
def engine():
    with running_engine(max_num_seqs=4, max_model_len=1024, max_prefill_tokens=512) as eng:
        yield eng


async def _generate(engine, ids: list[int], max_tokens: int = 24) -> str:
    text = ""
    async for delta in engine.generate(GenerationRequest("p", tuple(ids), SamplingParams(max_tokens=max_tokens,
                                                                                          temperature=0.0))):
        text += delta.text
    return text


def _reference(engine, ids: list[int], max_tokens: int = 24) -> str:
    out = engine._model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False)
    return engine._tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


@pytest.mark.slow
def test_a_chats_next_turn_starts_from_the_cached_conversation(engine) -> None:
    turns = [ChatTurn("system", "You are a helpful assistant of the Meridian factory. Answer briefly."),
             ChatTurn("user", "What is the capital of France?")]
    first_ids = engine.tokenize_chat(turns)
    first = asyncio.run(_generate(engine, first_ids))
    assert first.strip() == _reference(engine, first_ids).strip()
    before = engine.stats()

    turns += [ChatTurn("assistant", first), ChatTurn("user", "And what is the capital of Spain?")]
    second_ids = engine.tokenize_chat(turns)
    second = asyncio.run(_generate(engine, second_ids))
    after = engine.stats()
    hits = after.prefix_cache_hits_total - before.prefix_cache_hits_total
    assert hits >= len(first_ids)  # the whole first prompt (and the answer as far as it tokenizes the same)
    assert after.prefix_cache_queries_total - before.prefix_cache_queries_total == len(second_ids)
    assert second.strip() == _reference(engine, second_ids).strip()  # the tokens of a full prefill


@pytest.mark.slow
def test_with_prefix_caching_off_nothing_is_looked_up() -> None:
    with running_engine(max_num_seqs=2, max_model_len=512, prefix_cache_mb=0) as eng:
        ids = eng.tokenize_chat([ChatTurn("user", "Say hello to the whole team, please.")])
        for _ in range(2):
            asyncio.run(_generate(eng, ids, 4))
        assert eng.stats().prefix_cache_queries_total == 0 and eng.stats().prefix_cache_hits_total == 0
