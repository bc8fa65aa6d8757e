"""A lean forward for Llama-family decoders on the CPU: one function over the layers, fused projections.

The Hugging Face forward spends a fifth of a batch-1 decode step of the embedded model in Python between
the ops (mask building, keyword plumbing, 30 decoder layers' module calls: `scripts/profile_decode.py`,
docs/benchmarks.md "A lean decode forward"), which vLLM-CPU avoids with its own model code. This module is
that model code for the architectures whose layers are plain pre-norm attention + SwiGLU (llama, mistral
without a sliding window, qwen2, qwen3): the same arithmetic, with

- q/k/v fused into one projection and gate/up into another (one prepacked or int8 GEMM instead of three and
  two; `fuse_projections`, done at load before the linears are packed or quantised: per-channel weight
  scales and per-token activation scales make the fused int8 product exactly the separate ones),
- grouped-query attention at decode without repeating the keys (the query heads of one key head are laid
  out as that head's query rows),
- the mask built once a step, not per layer.

It reads and writes the engine's transformers cache (`cache.layers[i].update`), calls the model's own
embedding, rotary embedding, final norm and lm_head modules (so the rotation's hooks, cpu_rotation.py, still
apply), and gives the same greedy text as the model's forward (tests/inference/test_lean_decoder.py).
Written here because no maintained library offers an eager CPU forward over a transformers model's own
weights and cache: vLLM's model code needs vLLM's engine, and torch.compile took minutes to start on these
CPUs (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")


def unsupported(model: Any) -> str | None:
    """Why the lean forward cannot run this model (None: it can)."""
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in SUPPORTED:
        return f"model type {kind!r} is not one of {', '.join(SUPPORTED)}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}"
    window = getattr(config, "sliding_window", None)
    if window and (kind != "qwen2" or getattr(config, "use_sliding_window", False)):
        return "sliding-window attention"
    if any(t != "full_attention" for t in getattr(config, "layer_types", None) or ()):
        return "layers other than full attention"
    decoder = getattr(model, "model", None)
    if decoder is None or not hasattr(decoder, "layers") or not hasattr(model, "lm_head"):
        return "not a decoder with model.layers and lm_head"
    for layer in decoder.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if not all(hasattr(attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")) \
                and not hasattr(attn, "qkv_proj"):
            return "attention without q/k/v projections"
        if not hasattr(mlp, "down_proj"):
            return "MLP without down_proj"
    return None


def _concat(*layers: torch.nn.Linear) -> torch.nn.Linear:
    weight = torch.cat([layer.weight.detach() for layer in layers], dim=0)
    has_bias = [layer.bias is not None for layer in layers]
    fused = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=any(has_bias), device=weight.device,
                            dtype=weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(weight)
        if any(has_bias):
            fused.bias.copy_(torch.cat([layer.bias.detach() if layer.bias is not None
                                        else layer.weight.new_zeros(layer.out_features) for layer in layers]))
    return fused


class FusedPart(torch.nn.Module):
    """A projection fused into `owner.<name>`: its slice of the fused output. The model's own forward (a
    caller's `model.generate()`) still runs after fusing, computing the fused product once per part; the lean
    forward calls the fused layer once."""

    def __init__(self, owner: torch.nn.Module, name: str, start: int, end: int) -> None:
        super().__init__()
        object.__setattr__(self, "_owner", owner)  # not a submodule: the owner holds the fused layer
        self._name, self.start, self.end, self.out_features = name, start, end, end - start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self._owner, self._name)(x)[..., self.start:self.end]

    def extra_repr(self) -> str:
        return f"{self._name}[{self.start}:{self.end}]"


def _fuse(owner: torch.nn.Module, parts: tuple[str, ...], name: str) -> bool:
    layers = [getattr(owner, part, None) for part in parts]
    if not all(type(layer) is torch.nn.Linear for layer in layers):
        return False
    setattr(owner, name, _concat(*layers))
    start = 0
    for part, layer in zip(parts, layers):
        setattr(owner, part, FusedPart(owner, name, start, start + layer.out_features))
        start += layer.out_features
    return True


def fuse_projections(model: Any) -> int:
    """Fuse q/k/v into `qkv_proj` and gate/up into `gate_up_proj` (plain nn.Linear, concatenated along the
    outputs, which the CPU packing or int8 quantising then replaces), in place; the old names become
    `FusedPart` slices of them. Returns the number of fused layers."""
    fused = 0
    for layer in model.model.layers:
        fused += _fuse(layer.self_attn, ("q_proj", "k_proj", "v_proj"), "qkv_proj")
        fused += _fuse(layer.mlp, ("gate_proj", "up_proj"), "gate_up_proj")
    return fused


@dataclass(frozen=True)
class _Layer:
    attn: Any
    mlp: Any
    norm1: torch.Tensor  # input_layernorm's weight
    norm2: torch.Tensor  # post_attention_layernorm's weight
    eps1: float
    eps2: float


def _eps(norm: Any) -> float:
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


class LeanDecoder:
    """logits of the last position, [B, vocab], for input ids [B, L] appended to `cache` (left-padded rows:
    `mask` [B, T] covers the cache and the new tokens, `positions` [B, L] are the tokens' positions)."""

    def __init__(self, model: Any) -> None:
        reason = unsupported(model)
        if reason:
            raise ValueError(f"lean forward: {reason}")
        config = model.config
        self._model = model
        self._heads = int(config.num_attention_heads)
        self._kv_heads = int(getattr(config, "num_key_value_heads", None) or self._heads)
        self._head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self._heads)
        self._layers = [_Layer(layer.self_attn, layer.mlp, layer.input_layernorm.weight,
                               layer.post_attention_layernorm.weight, _eps(layer.input_layernorm),
                               _eps(layer.post_attention_layernorm)) for layer in model.model.layers]

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        decoder = self._model.model
        h = decoder.embed_tokens(ids)
        cos, sin = decoder.rotary_emb(h, positions)
        batch, length = ids.shape
        attn_mask = _attention_mask(mask, length)
        for index, layer in enumerate(self._layers):
            x = F.rms_norm(h, (h.shape[-1],), layer.norm1, layer.eps1)
            h = h + self._attention(layer.attn, x, cos, sin, cache.layers[index], attn_mask, batch, length)
            x = F.rms_norm(h, (h.shape[-1],), layer.norm2, layer.eps2)
            h = h + _mlp(layer.mlp, x)
        return self._model.lm_head(decoder.norm(h[:, -1:, :]))[:, -1, :]

    def _attention(self, attn: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache_layer: Any,
                   attn_mask: torch.Tensor | None, batch: int, length: int) -> torch.Tensor:
        nh, nkv, hd = self._heads, self._kv_heads, self._head_dim
        if hasattr(attn, "qkv_proj"):
            q, k, v = attn.qkv_proj(x).split((nh * hd, nkv * hd, nkv * hd), dim=-1)
        else:
            q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
        q, k, v = q.view(batch, length, nh, hd), k.view(batch, length, nkv, hd), v.view(batch, length, nkv, hd)
        if hasattr(attn, "q_norm"):  # qwen3: per-head norms before the rotary embedding
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = _rotary(q, k, cos, sin)
        k, v = cache_layer.update(k, v)
        if length == 1:  # decode: the query heads sharing a key head are that head's query rows
            out = F.scaled_dot_product_attention(q.reshape(batch, nkv, nh // nkv, hd), k, v, attn_mask=attn_mask)
        else:
            if nkv != nh:
                k, v = k.repeat_interleave(nh // nkv, dim=1), v.repeat_interleave(nh // nkv, dim=1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).transpose(1, 2)
        return attn.o_proj(out.reshape(batch, length, nh * hd))


def _mlp(mlp: Any, x: torch.Tensor) -> torch.Tensor:
    if hasattr(mlp, "gate_up_proj"):
        gate, up = mlp.gate_up_proj(x).chunk(2, dim=-1)
    else:
        gate, up = mlp.gate_proj(x), mlp.up_proj(x)
    return mlp.down_proj(F.silu(gate) * up)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [B, 1, L, D]: one angle per position, every head
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _attention_mask(mask: torch.Tensor, length: int) -> torch.Tensor | None:
    """SDPA's boolean mask (True: attend), [B, 1, L, T]; None when every row attends to every column.

    Query i sits at column T - L + i and sees the columns up to it that are not padding; it always sees
    itself, so a padding query of a left-padded row is not fully masked (which gives NaN, and NaN values
    would reach the real tokens through the cache even where their weight is zero)."""
    keys = mask.bool()
    total = keys.shape[1]
    if length == 1:
        return None if bool(keys.all()) else keys[:, None, None, :]
    columns = torch.arange(total, device=mask.device)
    rows = torch.arange(total - length, total, device=mask.device)
    causal = columns[None, :] <= rows[:, None]  # [L, T]
    allowed = (keys[:, None, :] & causal[None]) | (columns[None, :] == rows[:, None])[None]
    return allowed[:, None]
