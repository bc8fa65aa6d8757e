"""The VRAM plan: weight bytes, KV-cache bytes per token, and what context x sequences fit a card.

Pure arithmetic on a model's config.json (no torch): used by scripts/quantize.py's report, the
vLLM engine's start-up sizing and the doctor command. Figures for Llama-7B: 6.74 B parameters,
KV cache fp16 = 2 x 32 layers x 32 KV heads x 128 x 2 bytes = 512 KiB per token.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3
MIN_VRAM_BYTES = int(7.5 * GIB)  # "at least 8 GB": 8 GB cards report 7.6-8.0 GiB in all
# CUDA context, the allocator's slack, activations and sampling buffers at modest batch sizes.
RUNTIME_OVERHEAD_BYTES = int(0.6 * GIB)
UTILIZATION = 0.94  # share of the card the plan may use
CARDS = {"8GB": 8 * GIB, "16GB": 15 * GIB}  # what such cards report (a T4 shows 15 GiB)

WEIGHT_BITS = {"fp32": 32, "float32": 32, "fp16": 16, "float16": 16, "bf16": 16, "bfloat16": 16,
               "bnb-int8": 8, "w8a8": 8, "int8": 8}


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_position: int
    tied_embeddings: bool

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def linear_params(self) -> int:
        attn = self.hidden * self.heads * self.head_dim * 2 + self.hidden * self.kv_heads * self.head_dim * 2
        mlp = 3 * self.hidden * self.intermediate
        return self.layers * (attn + mlp)

    @property
    def params(self) -> int:
        norms = self.layers * 2 * self.hidden + self.hidden
        return self.embedding_params + self.linear_params + norms


def shape_from_config(config: dict[str, Any]) -> ModelShape:
    text = config.get("text_config") or config
    hidden = int(text["hidden_size"])
    heads = int(text["num_attention_heads"])
    return ModelShape(
        layers=int(text["num_hidden_layers"]), hidden=hidden, heads=heads,
        kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or hidden // heads),
        intermediate=int(text["intermediate_size"]), vocab=int(text["vocab_size"]),
        max_position=int(text.get("max_position_embeddings") or 2048),
        tied_embeddings=bool(text.get("tie_word_embeddings", False)),
    )


def shape_from_folder(folder: Path) -> ModelShape:
    return shape_from_config(json.loads((Path(folder) / "config.json").read_text()))


def weight_bytes(shape: ModelShape, method: str = "fp16") -> int:
    """Linear layers at the method's width; embeddings, lm_head and norms stay 16-bit under INT8
    (bitsandbytes and llm-compressor both leave them), plus one fp16/fp32 scale per output row."""
    bits = WEIGHT_BITS[method]
    if bits >= 16:
        return shape.params * bits // 8
    rows = shape.layers * (shape.heads * shape.head_dim * 2 + shape.kv_heads * shape.head_dim * 2
                           + 3 * shape.intermediate)
    return shape.linear_params * bits // 8 + (shape.params - shape.linear_params) * 2 + rows * 4


def kv_bytes_per_token(shape: ModelShape, dtype_bytes: int = 2) -> int:
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * dtype_bytes


@dataclass(frozen=True)
class Plan:
    vram_bytes: int
    weight_bytes: int
    overhead_bytes: int
    kv_budget_bytes: int
    kv_bytes_per_token: int
    kv_tokens: int
    max_model_len: int
    max_num_seqs: int
    fits: bool
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "vram_gib": round(self.vram_bytes / GIB, 2),
                "weight_gib": round(self.weight_bytes / GIB, 2), "kv_budget_gib": round(self.kv_budget_bytes / GIB, 2),
                "kv_kib_per_token": round(self.kv_bytes_per_token / 1024, 1)}


def plan_for(shape: ModelShape, vram_bytes: int, *, method: str = "fp16", kv_dtype_bytes: int = 2,
             utilization: float = UTILIZATION, want_model_len: int | None = None, want_seqs: int | None = None,
             overhead_bytes: int = RUNTIME_OVERHEAD_BYTES) -> Plan:
    """Size max_model_len and max_num_seqs so that weights + overhead + KV cache stay in `utilization` x VRAM."""
    weights = weight_bytes(shape, method)
    per_token = kv_bytes_per_token(shape, kv_dtype_bytes)
    budget = int(vram_bytes * utilization) - weights - overhead_bytes
    tokens = max(0, budget // per_token)
    model_len = min(want_model_len or shape.max_position, shape.max_position, 4096)
    if tokens < 256:
        return Plan(vram_bytes, weights, overhead_bytes, max(budget, 0), per_token, int(tokens), 0, 0, False,
                    f"the weights ({weights / GIB:.2f} GiB) and runtime ({overhead_bytes / GIB:.2f} GiB) leave "
                    f"{max(budget, 0) / GIB:.2f} GiB of {vram_bytes / GIB:.2f} GiB for the KV cache: "
                    f"{int(tokens)} tokens, fewer than the 256 a conversation needs")
    model_len = min(model_len, int(tokens))
    seqs = max(1, min(want_seqs or 64, int(tokens) // max(1, model_len // 2)))  # sequences use half the window on average
    return Plan(vram_bytes, weights, overhead_bytes, budget, per_token, int(tokens), model_len, seqs, True)


def summary(shape: ModelShape, method: str) -> dict[str, Any]:
    """What fits in 8 GB and 16 GB cards, for the quantisation report."""
    out: dict[str, Any] = {"params": shape.params, "weight_bytes": weight_bytes(shape, method),
                           "kv_bytes_per_token_fp16": kv_bytes_per_token(shape)}
    for label, vram in CARDS.items():
        plan = plan_for(shape, vram, method=method)
        out[label] = {"kv_tokens": plan.kv_tokens, "max_model_len": plan.max_model_len,
                      "max_num_seqs": plan.max_num_seqs, "fits": plan.fits,
                      "examples": {f"{ctx}x{n}": ctx * n <= plan.kv_tokens
                                   for ctx, n in ((512, 1), (1024, 1), (1024, 4), (2048, 4), (4096, 8))}}
    return out


LLAMA_7B_CONFIG = {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 32,
                   "num_hidden_layers": 32, "intermediate_size": 11008, "vocab_size": 32000,
                   "max_position_embeddings": 4096, "tie_word_embeddings": False}
