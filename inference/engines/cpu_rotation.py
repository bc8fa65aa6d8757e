"""Rotations that make the CPU int8 mode's activations easier to quantise (QuaRot-style), applied before it.

Per-token int8 activations cost the int8 mode most of its perplexity (measured, docs/benchmarks.md "INT8 on
the CPU": activations alone +3.95 % on GPL-3, weights alone +0.50 %): a few channels carry outliers, and one
scale per token then leaves the other channels a handful of levels. An orthogonal rotation Q spreads the
outliers over every channel and changes nothing in float arithmetic, since x W^T = (x Q)(W Q)^T:

- the residual stream is rotated by a random orthogonal matrix R (hidden size): the RMSNorm weights are folded
  into the weights that read the stream (q, k, v, gate, up: W diag(g) R; RMSNorm commutes with R once its
  weight is 1), the weights that write it (o, down) become R^T W, the embedding's output is multiplied by R
  and the final norm's output by R^T before its weight (the embedding stays tied to lm_head, untouched);
- each value head is rotated by a random orthogonal matrix (v's rows, o's columns per head);
- down_proj's input, made inside the MLP, is rotated at run time by a block Hadamard transform with random
  signs (`HadamardInput`; QuaRot's one online rotation), its weight's columns the same way.

Measured on the embedded model (int8 against float32): GPL-3 +4.89 % -> +0.26 %, GFDL-1.3 +3.78 % -> -0.05 %,
Apache-2.0 +7.58 % -> +0.23 % (whole texts, the seed below; across six seeds a spread of about +-1 %, and
some seeds turned the greedy answer to one knife-edge question into French: hence the chosen seed). On
scripts/data/eval.txt (about 1,000 tokens, too few to tell) +1.13 % -> +2.17 %, and decoding is slower (the
run-time Hadamard and the hooks: 33.5 vs 27.4 ms a token at batch 1, AMD EPYC): off by default
(INFERENCE_INT8_ROTATION), until it is faster and measured on a larger pinned text. Written here because the
libraries that do this (QuaRot, SpinQuant, llm-compressor's transforms) are GPU research code or export to
formats this engine does not load; the arithmetic is a page. Llama-style decoders only (RMSNorm with a plain
weight; model types in `SUPPORTED`); other models are quantised without rotation.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")  # RMSNorm as weight * x / rms(x), q/k/v/o + gate/up/down
SEED = 5  # fixed, so a model gets the same weights at every start; chosen among 8 (docs/benchmarks.md: kept
#           every greedy answer of 8 questions and had low perplexity on development texts)


def _orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


@functools.lru_cache(maxsize=4)
def _hadamard(n: int) -> torch.Tensor:
    """Sylvester's Hadamard matrix of order n (a power of two), scaled to be orthogonal. One tensor per order,
    shared by every layer: 1 MiB at 512 that can stay in the CPU's cache (a copy per layer is 30 MiB more to
    read every decode step)."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / n ** 0.5


def hadamard_block(k: int, most: int = 512) -> int:
    """The largest power of two that divides k, at most `most` (1536 -> 512, 11008 -> 256)."""
    block = 1
    while block < most and k % (block * 2) == 0:
        block *= 2
    return block


class HadamardInput(torch.nn.Module):
    """x -> (x * signs) @ blockdiag(H), then the wrapped linear, whose weight's columns were rotated the same way
    at construction: the same output in float, an easier input for int8."""

    def __init__(self, linear: torch.nn.Linear, generator: torch.Generator) -> None:
        super().__init__()
        k = linear.in_features
        self.block = hadamard_block(k)
        self.register_buffer("signs", torch.randint(0, 2, (k,), generator=generator).float() * 2 - 1,
                             persistent=False)
        self.register_buffer("h", _hadamard(self.block), persistent=False)
        with torch.no_grad():
            w = linear.weight.float() * self.signs[None, :]
            linear.weight.copy_((w.view(-1, k // self.block, self.block) @ self.h).reshape(-1, k))
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = (x * self.signs).reshape(-1, shape[-1] // self.block, self.block) @ self.h
        return self.linear(y.reshape(shape))


def supported(model: Any) -> bool:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) in SUPPORTED and hasattr(getattr(model, "model", None), "layers")


@torch.no_grad()
def rotate(model: Any) -> str | None:
    """Rotate a float Llama-style model in place (same outputs in float); None when the model is not one."""
    if not supported(model):
        return None
    config, decoder = model.config, model.model
    generator = torch.Generator().manual_seed(SEED)
    r = _orthogonal(config.hidden_size, generator)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    heads = _orthogonal(head_dim, generator)
    for layer in decoder.layers:
        attn, mlp = layer.self_attn, layer.mlp
        for norm, readers in ((layer.input_layernorm, (attn.q_proj, attn.k_proj, attn.v_proj)),
                              (layer.post_attention_layernorm, (mlp.gate_proj, mlp.up_proj))):
            for linear in readers:
                linear.weight.copy_((linear.weight.double() * norm.weight.double()[None, :]).float() @ r)
            norm.weight.fill_(1.0)
        v = attn.v_proj.weight.view(-1, head_dim, config.hidden_size)  # [kv heads, head_dim, hidden]
        attn.v_proj.weight.copy_(torch.einsum("ij,kjl->kil", heads.t(), v).reshape(attn.v_proj.weight.shape))
        if attn.v_proj.bias is not None:
            attn.v_proj.bias.copy_((attn.v_proj.bias.view(-1, head_dim) @ heads).reshape(-1))
        o = attn.o_proj.weight.view(config.hidden_size, -1, head_dim)
        attn.o_proj.weight.copy_((o @ heads).reshape(attn.o_proj.weight.shape))
        for writer in (attn.o_proj, mlp.down_proj):
            writer.weight.copy_(r.t() @ writer.weight)
            if writer.bias is not None:
                writer.bias.copy_(writer.bias @ r)
        mlp.down_proj = HadamardInput(mlp.down_proj, generator)
    final = decoder.norm.weight.detach().clone()
    decoder.norm.weight.fill_(1.0)
    decoder.embed_tokens.register_forward_hook(lambda module, args, out: out @ r)
    decoder.norm.register_forward_hook(lambda module, args, out: (out @ r.t()) * final)
    return "rotated (QuaRot-style: residual stream, value heads, down_proj input)"
