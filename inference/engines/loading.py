"""What a model folder declares, read once: its quantisation scheme (from config.json).

Both engines, the doctor and scripts/quantize.py ask the same question ("is this folder quantised, and
how?"); this is the one place that reads the answer, from the `quantization_config` that
transformers, bitsandbytes and llm-compressor write. No torch here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class QuantScheme:
    method: str  # quant_method: "compressed-tensors", "bitsandbytes", ...
    weight_bits: int | None = None
    weight_type: str | None = None  # "int" or "float"
    activation_bits: int | None = None
    activation_type: str | None = None
    activation_symmetric: bool | None = None
    activation_dynamic: bool | None = None

    @property
    def int8_activations(self) -> bool:
        """W8A8 int8: weights and activations int8 (vLLM's scaled-mm kernels)."""
        return (self.weight_bits, self.weight_type, self.activation_bits, self.activation_type) == (8, "int", 8, "int")

    @property
    def name(self) -> str:
        """The short name the memory plan and /version use: w8a8, bnb-int8, or the quant_method."""
        if self.method == "compressed-tensors" and self.int8_activations:
            return "w8a8"
        if self.method == "bitsandbytes":
            return "bnb-int8"
        return self.method


def scheme_from_config(config: dict[str, Any]) -> QuantScheme | None:
    quant = config.get("quantization_config")
    if not isinstance(quant, dict):
        return None
    method = str(quant.get("quant_method") or "quantized")
    groups = quant.get("config_groups") or {}
    first = next(iter(groups.values()), {}) if isinstance(groups, dict) else {}
    weights = first.get("weights") or {}
    inputs = first.get("input_activations") or {}
    return QuantScheme(
        method=method,
        weight_bits=weights.get("num_bits") if weights else (8 if quant.get("load_in_8bit") else None),
        weight_type=weights.get("type") if weights else ("int" if quant.get("load_in_8bit") else None),
        activation_bits=inputs.get("num_bits"), activation_type=inputs.get("type"),
        activation_symmetric=inputs.get("symmetric"), activation_dynamic=inputs.get("dynamic"))


def folder_quantization(folder: Path) -> QuantScheme | None:
    """The scheme a saved model folder declares, or None (not a folder, no config, not quantised)."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return None
    try:
        return scheme_from_config(json.loads(config.read_text()))
    except (OSError, ValueError):
        return None
