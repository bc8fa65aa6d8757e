"""Batched sampling with per-row parameters (temperature, top-k, top-p, penalties, seed), and the
log-probabilities of the sampled tokens (of the model's raw distribution, as vLLM reports them)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..types import SamplingParams


def sample_next_tokens(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generated: Sequence[Sequence[int]],
    generators: Sequence[torch.Generator | None],
    shared_generator: torch.Generator,
    prompts: Sequence[Sequence[int]] | None = None,
) -> list[int]:
    """logits: [B, V] float32 for the last position of each row (modified in place). Returns one token per
    row. `prompts` are what repetition_penalty also looks at (vLLM: prompt and output tokens)."""
    batch, vocab = logits.shape
    logits = logits.float()
    for row, p in enumerate(params):
        if p.repetition_penalty != 1.0:
            seen = list(prompts[row] if prompts else ()) + list(generated[row])
            if seen:
                ids = torch.tensor(sorted(set(seen)), dtype=torch.long, device=logits.device)
                picked = logits[row, ids]
                logits[row, ids] = torch.where(picked > 0, picked / p.repetition_penalty,
                                               picked * p.repetition_penalty)
        if (p.frequency_penalty or p.presence_penalty) and generated[row]:
            ids = torch.tensor(generated[row], dtype=torch.long, device=logits.device)
            counts = torch.bincount(ids, minlength=vocab).to(logits.dtype)
            logits[row] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(logits.dtype)

    greedy_rows = [i for i, p in enumerate(params) if p.greedy]
    out = [0] * batch
    if greedy_rows:
        picks = logits[greedy_rows].argmax(dim=-1).tolist()
        for row, token in zip(greedy_rows, picks):
            out[row] = token
    sample_rows = [i for i, p in enumerate(params) if not p.greedy]
    if not sample_rows:
        return out

    sub = logits[sample_rows]
    temps = torch.tensor([params[i].temperature for i in sample_rows], dtype=sub.dtype, device=sub.device)
    sub = sub / temps.unsqueeze(1)
    top_ks = [params[i].top_k if params[i].top_k > 0 else vocab for i in sample_rows]
    top_ps = [params[i].top_p for i in sample_rows]
    if min(top_ks) < vocab or min(top_ps) < 1.0:
        sorted_logits, sorted_idx = sub.sort(dim=-1, descending=True)
        positions = torch.arange(vocab, device=sub.device).unsqueeze(0)
        k = torch.tensor(top_ks, device=sub.device).unsqueeze(1)
        remove = positions >= k
        probs = sorted_logits.softmax(dim=-1)
        cumulative = probs.cumsum(dim=-1) - probs  # mass strictly before each token
        p = torch.tensor(top_ps, dtype=sub.dtype, device=sub.device).unsqueeze(1)
        remove |= cumulative >= p
        remove[:, 0] = False  # always keep the most likely token
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        sub = torch.full_like(sub, float("-inf")).scatter(1, sorted_idx, sorted_logits)
    probs = sub.softmax(dim=-1)

    unseeded = [j for j, i in enumerate(sample_rows) if generators[i] is None]
    if unseeded:
        picks = torch.multinomial(probs[unseeded], 1, generator=shared_generator).squeeze(1).tolist()
        for j, token in zip(unseeded, picks):
            out[sample_rows[j]] = token
    for j, row in enumerate(sample_rows):
        gen = generators[row]
        if gen is not None:
            out[row] = int(torch.multinomial(probs[j], 1, generator=gen).item())
    return out


def token_logprobs(logits: torch.Tensor, tokens: Sequence[int], tops: Sequence[int]
                   ) -> list[tuple[float, list[tuple[int, float]]]]:
    """For each row: the log-probability of its token and its `tops[row]` most likely (id, logprob)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(1, torch.tensor(tokens, dtype=torch.long, device=logits.device).unsqueeze(1))
    k = max(tops, default=0)
    if k:
        values, ids = logprobs.topk(k, dim=-1)
        values, ids = values.tolist(), ids.tolist()
    out = []
    for row, top in enumerate(tops):
        alternatives = list(zip(ids[row][:top], values[row][:top])) if k and top else []
        out.append((float(chosen[row, 0]), alternatives))
    return out
