"""The running decode batch: left-padded KV cache rows that sequences join and leave.

Every row shares one cache length T (left padding, masked out). A new group of
prefilled sequences is merged by padding whichever side is shorter on the left;
a finished row is dropped with an index select; columns that became padding in
every row are trimmed, so the cache never grows past the longest live sequence.

Between joins and leaves the cache grows in place: each layer's keys and values live in a buffer with
room for `SLACK` more columns (`SlackLayer`), and a decode step writes its column there instead of
concatenating a new tensor (transformers' DynamicLayer copies the whole cache every step, which the
decode step profile showed as 13 % of a step at batch 8; docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicLayer

SLACK = 64  # columns of room a buffer is given (and grown by, at least) beyond what it holds


class SlackLayer(DynamicLayer):
    """A DynamicLayer whose keys / values [B, H, T, D] are views of buffers with room to grow along T."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self._k, self._v = self._room(keys), self._room(values)
        self.keys, self.values = self._k[:, :, :keys.shape[2]], self._v[:, :, :values.shape[2]]

    @staticmethod
    def _room(t: torch.Tensor, extra: int = SLACK) -> torch.Tensor:
        b, h, n, d = t.shape
        buf = t.new_empty((b, h, n + max(extra, SLACK, n // 4), d))
        buf[:, :, :n].copy_(t)
        return buf

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        n, add = self.keys.shape[2], key_states.shape[2]
        if n + add > self._k.shape[2]:
            self._k, self._v = self._room(self.keys, add), self._room(self.values, add)
        self._k[:, :, n:n + add].copy_(key_states)
        self._v[:, :, n:n + add].copy_(value_states)
        self.keys, self.values = self._k[:, :, :n + add], self._v[:, :, :n + add]
        return self.keys, self.values


def _with_slack(cache: Any) -> None:
    """Give every plain DynamicLayer of `cache` room to grow in place (other layer kinds stay as they are)."""
    for i, layer in enumerate(cache.layers):
        if type(layer) in (DynamicLayer, SlackLayer) and layer.is_initialized:
            cache.layers[i] = SlackLayer(layer.keys, layer.values)


def _pad_kv(t: torch.Tensor, n: int) -> torch.Tensor:
    return F.pad(t, (0, 0, n, 0)) if n else t  # [B, H, T, D]: pad T on the left


def _pad_mask(t: torch.Tensor, n: int) -> torch.Tensor:
    return F.pad(t, (n, 0)) if n else t


class DecodeBatch:
    def __init__(self) -> None:
        self.cache: Any = None  # transformers DynamicCache
        self.mask: torch.Tensor | None = None  # [B, T] long
        self.rows: list[Any] = []  # the sequence object of each row
        self.next_tokens: list[int] = []

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def length(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[1])

    def clear(self) -> None:
        self.cache, self.mask, self.rows, self.next_tokens = None, None, [], []

    def merge(self, cache: Any, mask: torch.Tensor, rows: list[Any], next_tokens: list[int]) -> None:
        if not self.rows:
            self.cache, self.mask, self.rows, self.next_tokens = cache, mask, list(rows), list(next_tokens)
            _with_slack(self.cache)
            return
        assert self.mask is not None
        own, new = self.mask.shape[1], mask.shape[1]
        total = max(own, new)
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([_pad_kv(mine.keys, total - own), _pad_kv(theirs.keys, total - new)], dim=0)
            mine.values = torch.cat([_pad_kv(mine.values, total - own), _pad_kv(theirs.values, total - new)], dim=0)
        self.mask = torch.cat([_pad_mask(self.mask, total - own), _pad_mask(mask, total - new)], dim=0)
        _with_slack(self.cache)
        self.rows.extend(rows)
        self.next_tokens.extend(next_tokens)

    def keep(self, keep_rows: list[int]) -> None:
        """Keep only these row indices (in order); trim columns no live row uses."""
        if len(keep_rows) == len(self.rows):
            return
        if not keep_rows:
            self.clear()
            return
        assert self.mask is not None
        index = torch.tensor(keep_rows, dtype=torch.long, device=self.mask.device)
        self.mask = self.mask.index_select(0, index)
        used = self.mask.any(dim=0)
        first = int(used.float().argmax().item())  # first column any live row attends to
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, first:]
            layer.values = layer.values.index_select(0, index)[:, :, first:]
        if first:
            self.mask = self.mask[:, first:]
        _with_slack(self.cache)
        self.rows = [self.rows[i] for i in keep_rows]
        self.next_tokens = [self.next_tokens[i] for i in keep_rows]

    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """input_ids [B,1], attention mask [B,T+1], position ids [B,1] for one decode step."""
        assert self.mask is not None
        device = self.mask.device
        ids = torch.tensor(self.next_tokens, dtype=torch.long, device=device).unsqueeze(1)
        self.mask = F.pad(self.mask, (0, 1), value=1)
        positions = self.mask.sum(dim=1, keepdim=True) - 1
        return ids, self.mask, positions


def left_padded(prompts: list[tuple[int, ...]], pad_id: int, device: Any) -> tuple[torch.Tensor, ...]:
    """input_ids, attention mask and position ids of a left-padded prefill group."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)
