"""A model's shape from its config.json, and the arithmetic that follows from it alone: parameters,
weight bytes by quantisation method, KV-cache bytes per token. No torch; the memory plan
(memory_plan.py), the doctor, the smoke check and scripts/quantize.py's report build on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WEIGHT_BITS = {"fp32": 32, "float32": 32, "fp16": 16, "float16": 16, "bf16": 16, "bfloat16": 16,
               "bnb-int8": 8, "w8a8": 8, "w8a16": 8, "int8": 8, "w4a16": 4}
GROUP_SIZE_4BIT = 128  # W4A16 (GPTQ/AWQ) group size: one fp16 scale per 128 weights
KV_DTYPES = {  # cache dtype -> (bytes per element, fp32 scales per head and token, minimum capability)
    "auto": (2, 0, (7, 0)), "float16": (2, 0, (7, 0)), "bfloat16": (2, 0, (8, 0)),
    "int8_per_token_head": (1, 2, (7, 0)), "fp8": (1, 0, (8, 9)), "fp8_e4m3": (1, 0, (8, 9)),
    "fp8_e5m2": (1, 0, (8, 9)), "fp8_per_token_head": (1, 2, (8, 9)),
}
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


def read_config(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "config.json").read_text())


def shape_from_folder(folder: Path) -> ModelShape:
    return shape_from_config(read_config(folder))


def method_of(config: dict[str, Any], fallback: str = "fp16") -> tuple[str, bool]:
    """(weight method, lm_head quantised) of a checkpoint, from the one quantisation reader
    (engines/loading.py); lm_head counts as quantised when a compressed-tensors config does not list
    it in `ignore` (llm-compressor's "Linear" target matches it otherwise)."""
    from .engines.loading import scheme_from_config

    scheme = scheme_from_config(config)
    if scheme is None:
        return fallback, False
    if scheme.name in WEIGHT_BITS:
        method = scheme.name
    elif scheme.method in ("gptq", "awq") or scheme.weight_bits == 4:
        method = "w4a16"
    elif scheme.weight_bits == 8:
        method = "w8a16"
    else:
        return fallback, False
    ignored = (config.get("quantization_config") or {}).get("ignore") or []
    lm_head = scheme.method == "compressed-tensors" and not any("lm_head" in str(name) for name in ignored)
    return method, lm_head


def weight_bytes(shape: ModelShape, method: str = "fp16", *, lm_head_quantized: bool = False) -> int:
    """Linear layers at the method's width plus scales (8-bit: one fp32 per output row; 4-bit: one fp16
    per 128 weights); embeddings and norms stay 16-bit, lm_head too unless quantised."""
    bits = WEIGHT_BITS[method]
    if bits >= 16:
        return shape.params * bits // 8
    quantized = shape.linear_params
    rows = shape.layers * (shape.heads * shape.head_dim * 2 + shape.kv_heads * shape.head_dim * 2
                           + 3 * shape.intermediate)
    if lm_head_quantized and not shape.tied_embeddings:
        quantized += shape.vocab * shape.hidden
        rows += shape.vocab
    scales = quantized // GROUP_SIZE_4BIT * 2 if bits == 4 else rows * 4
    return quantized * bits // 8 + scales + (shape.params - quantized) * 2


def kv_bytes_per_token(shape: ModelShape, dtype_bytes: int | str = 2) -> int:
    """K and V of every layer for one token; `dtype_bytes` is a byte width or a vLLM cache dtype."""
    if isinstance(dtype_bytes, str):
        width, scales, _ = KV_DTYPES[dtype_bytes]
        return shape.layers * shape.kv_heads * (2 * shape.head_dim * width + scales * 4)
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * dtype_bytes


LLAMA_7B_CONFIG = {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 32,
                   "num_hidden_layers": 32, "intermediate_size": 11008, "vocab_size": 32000,
                   "max_position_embeddings": 4096, "tie_word_embeddings": False}
