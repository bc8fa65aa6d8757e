"""Prefix caching for the transformers engine: a finished sequence's KV cache is kept, and a new prompt that begins
with the same tokens starts from it instead of prefilling them again.

A chat's next message resends the whole conversation (system prompt, history, the new question), so without
this every turn prefills everything said so far: with 20 users and 40-turn histories on 2 CPU cores that
prefill was most of the engine's work (docs/reliability.md). vLLM does the same on the GPU with its paged
KV cache (automatic prefix caching, block hashes); the transformers engine has no paged cache, so this keeps
whole per-sequence caches instead: the cached tokens are the finished sequence's prompt and its answer (all
but the last token, which never went through the model), and a lookup takes the longest common token prefix
with any entry. Written here because nothing maintained does this for a Hugging Face model outside a serving
stack (transformers' own prompt reuse is one static cache for one known prefix).

Entries are bounded by bytes (LRU). A new entry that continues a conversation (its prompt reused the whole
prompt of the entry it started from) replaces that entry, so one conversation holds one entry.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

MIN_HIT_TOKENS = 16  # a shorter common prefix is prefilled again (the copy costs about what it saves)


@dataclass(eq=False)
class _Entry:
    key: int
    tokens: torch.Tensor  # [N] long
    prompt_len: int  # of the sequence that produced it
    keys: list[torch.Tensor]  # per layer [1, H, N, D]
    values: list[torch.Tensor]
    nbytes: int


@dataclass(frozen=True)
class Hit:
    entry: _Entry
    length: int  # tokens taken from the entry


class PrefixCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._next_key = 0
        self.bytes = 0
        self.queried_tokens = 0  # vllm:prefix_cache_queries
        self.hit_tokens = 0  # vllm:prefix_cache_hits

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, prompt: list[int] | tuple[int, ...]) -> Hit | None:
        """The entry sharing the longest prefix with `prompt` (at least MIN_HIT_TOKENS), leaving at least one
        prompt token to run (its logits give the first new token)."""
        self.queried_tokens += len(prompt)
        if not self._entries or len(prompt) <= MIN_HIT_TOKENS:
            return None
        wanted = torch.tensor(prompt, dtype=torch.long)
        best: Hit | None = None
        for entry in self._entries.values():
            n = min(len(wanted), len(entry.tokens))
            if n <= (best.length if best else MIN_HIT_TOKENS - 1):
                continue
            differ = (wanted[:n] != entry.tokens[:n]).nonzero()
            common = int(differ[0]) if len(differ) else n
            common = min(common, len(prompt) - 1)
            if common >= MIN_HIT_TOKENS and (best is None or common > best.length):
                best = Hit(entry, common)
        if best is not None:
            self.hit_tokens += best.length
            self._entries.move_to_end(best.entry.key)
        return best

    def restore(self, hit: Hit, cache: Any) -> None:
        """Fill an empty transformers cache with the hit's first `length` tokens (copies: the entry stays)."""
        for layer, (keys, values) in enumerate(zip(hit.entry.keys, hit.entry.values)):
            cache.update(keys[:, :, :hit.length], values[:, :, :hit.length], layer)

    def start(self, prompt: list[int] | tuple[int, ...], config: Any) -> tuple[Hit, Any] | None:
        """For a new prompt: the hit and a fresh transformers cache holding its prefix, or None (no hit)."""
        hit = self.lookup(prompt)
        if hit is None:
            return None
        from transformers import DynamicCache

        cache = DynamicCache(config=config)
        self.restore(hit, cache)
        return hit, cache

    def keep_row(self, cache: Any, mask: torch.Tensor, row: int, tokens: list[int], prompt_len: int,
                 source: Hit | None) -> None:
        """Keep a finished batch row: `tokens` are what its cache holds (prompt and answer but the last token,
        which never went through the model); checked against the row's mask."""
        if int(mask[row].sum()) != len(tokens):
            return
        kv = row_kv(cache, row, len(tokens))
        if kv is not None:
            self.store(tokens, prompt_len, *kv, source=source)

    def store(self, tokens: list[int], prompt_len: int, keys: list[torch.Tensor], values: list[torch.Tensor],
              source: Hit | None = None) -> None:
        """Keep a finished sequence's cache (`keys` / `values` already copied out of the batch); `source` is
        the hit it started from, replaced when the new entry continues it."""
        if not self.enabled:
            return
        if source is not None and source.length >= source.entry.prompt_len:
            self._drop(source.entry.key)
        nbytes = sum(t.nbytes for t in keys) + sum(t.nbytes for t in values)
        if nbytes > self.max_bytes:
            return
        self._next_key += 1
        entry = _Entry(self._next_key, torch.tensor(tokens, dtype=torch.long), prompt_len, keys, values, nbytes)
        self._entries[entry.key] = entry
        self.bytes += nbytes
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: int) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


def row_kv(cache: Any, row: int, length: int) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
    """Copies of one batch row's last `length` cache columns (its own tokens: rows are left-padded), or None
    where a layer is not a plain growing one (sliding windows keep fewer columns)."""
    keys, values = [], []
    for layer in cache.layers:
        k = getattr(layer, "keys", None)
        if k is None or k.dim() != 4 or k.shape[2] < length or getattr(layer, "is_sliding", False):
            return None
        keys.append(k[row:row + 1, :, k.shape[2] - length:].clone())
        values.append(layer.values[row:row + 1, :, k.shape[2] - length:].clone())
    return keys, values
