"""Batched sampling: greedy, top-k / top-p masks, penalties, per-row seeds."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from inference.engines.sampling import sample_next_tokens  # noqa: E402
from inference.types import SamplingParams  # noqa: E402


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_greedy_rows_take_argmax() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 1.0]])
    params = [SamplingParams(max_tokens=1, temperature=0.0)] * 2
    assert sample_next_tokens(logits, params, [[], []], [None, None], _gen(0)) == [1, 0]


def test_top_k_one_is_greedy_even_at_high_temperature() -> None:
    logits = torch.randn(4, 100)
    params = [SamplingParams(max_tokens=1, temperature=2.0, top_k=1)] * 4
    assert sample_next_tokens(logits.clone(), params, [[]] * 4, [None] * 4, _gen(0)) == logits.argmax(-1).tolist()


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    params = [SamplingParams(max_tokens=1, temperature=1.0, top_p=0.5)]
    picks = {sample_next_tokens(logits.clone(), params, [[]], [None], _gen(i))[0] for i in range(50)}
    assert picks == {0}


def test_seeded_rows_repeat_and_ignore_batch_neighbours() -> None:
    logits = torch.randn(3, 50)
    seeded = SamplingParams(max_tokens=1, temperature=1.0, seed=42)
    other = SamplingParams(max_tokens=1, temperature=1.0)
    first = [sample_next_tokens(logits.clone(), [seeded, other, seeded], [[]] * 3, [_gen(42), None, _gen(42)],
                                _gen(i))[0] for i in range(5)]
    assert len(set(first)) == 1


def test_frequency_penalty_discourages_repeats() -> None:
    logits = torch.tensor([[2.0, 1.9, 0.0]])
    params = [SamplingParams(max_tokens=1, temperature=0.0, frequency_penalty=1.0)]
    assert sample_next_tokens(logits.clone(), params, [[0, 0]], [None], _gen(0)) == [1]
    presence = [SamplingParams(max_tokens=1, temperature=0.0, presence_penalty=-1.0)]
    assert sample_next_tokens(torch.tensor([[1.0, 1.5]]), presence, [[0]], [None], _gen(0)) == [0]
