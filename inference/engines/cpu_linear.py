"""Float linear layers on the CPU through oneDNN with prepacked weights (INFERENCE_CPU_GEMM).

torch's `F.linear` on a float32 CPU tensor goes to MKL's sgemm. On AMD EPYC that is the slow path: measured
on the embedded model's 211 linear shapes (AMD EPYC, family 25 model 17, 1 thread, CPU time, docs/benchmarks.md
"oneDNN prepacked linears"), a decode step's matrix products cost 70 ms at batch 1 and 86 ms at batch 8 through
MKL, 48 and 50 ms through oneDNN with the weight reordered once into its blocked layout. vLLM-CPU does the same
(`onednn_mm` with prepacked weights in vllm/model_executor/layers/utils.py), which is most of why it was ahead
of this engine on AMD. On Intel CPUs MKL is fast, so `auto` times both kernels on this CPU, on the model's own
widest decoder layer at 1 and 8 rows, and keeps the faster; `onednn` and `native` force the choice.

No library ships this as a module: the kernels are torch's own, the pair inductor emits when it freezes a
float linear (`torch.ops.mkldnn._reorder_linear_weight` + `torch.ops.mkldnn._linear_pointwise`), used here
without compiling (torch.compile on these CPUs took minutes at start, docs/benchmarks.md). Both are private
torch ops: where they are missing or fail a check against `F.linear`, the model keeps its nn.Linear layers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger("inference.engine")

MODES = ("auto", "onednn", "native")


@dataclass(frozen=True)
class GemmChoice:
    kernel: str  # "onednn" or "native"
    reason: str  # for /version's dtype_reason and the log
    layers: int = 0  # nn.Linear modules packed


def onednn_available() -> bool:
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class PackedLinear(torch.nn.Module):
    """y = x W^T + b with W held in oneDNN's blocked layout (an opaque tensor: it cannot be indexed or saved),
    in the layer's dtype or in `dtype` (then the input is cast to it and the output back)."""

    def __init__(self, linear: torch.nn.Linear, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.dtype = dtype or linear.weight.dtype
        weight = linear.weight.detach().to(self.dtype)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)  # None: any number of rows
        self.bias = linear.bias.detach().to(self.dtype) if linear.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.dtype:
            return torch.ops.mkldnn._linear_pointwise.default(x, self.packed, self.bias, "none", [], "")
        return torch.ops.mkldnn._linear_pointwise.default(x.to(self.dtype), self.packed, self.bias, "none", [],
                                                          "").to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN prepacked, {self.dtype}"


def _linears(model: Any) -> list[tuple[Any, str, torch.nn.Linear]]:
    """(parent, attribute, layer) for every float32 nn.Linear of the model, lm_head included."""
    found = []
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is torch.nn.Linear and child.weight.dtype == torch.float32 \
                    and child.weight.device.type == "cpu":
                found.append((module, name, child))
    return found


def _time(fn: Any, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _race(layer: torch.nn.Linear, repeats: int = 5) -> tuple[float, float]:
    """Seconds for (native, oneDNN) on this layer at 1 and at 8 rows, summed: the best of `repeats` each."""
    packed = PackedLinear(layer)
    native = onednn = 0.0
    with torch.inference_mode():
        for rows in (1, 8):
            x = torch.randn(rows, 1, layer.in_features)
            native += _time(lambda: [layer(x) for _ in range(4)], repeats)
            onednn += _time(lambda: [packed(x) for _ in range(4)], repeats)
    return native, onednn


def _matches(layer: torch.nn.Linear) -> bool:
    with torch.inference_mode():
        x = torch.randn(3, 5, layer.in_features)
        expected = layer(x)
        scale = float(expected.abs().max()) or 1.0
        return bool((PackedLinear(layer)(x) - expected).abs().max() <= 1e-4 * scale)


def choose_and_pack(model: Any, mode: str) -> GemmChoice:
    """Pack the model's float32 CPU linears for oneDNN when `mode` (or, for `auto`, the race) says so."""
    if mode not in MODES:
        raise ValueError(f"unknown CPU GEMM mode {mode!r}")
    if mode == "native":
        return GemmChoice("native", "float linears: torch's default (MKL), as INFERENCE_CPU_GEMM=native asks")
    layers = _linears(model)
    if not layers:
        return GemmChoice("native", "float linears: torch's default (no float32 linear layers on the CPU)")
    if not onednn_available():
        return GemmChoice("native", "float linears: torch's default (this torch has no oneDNN linear ops)")
    widest = max((layer for _, _, layer in layers if layer is not getattr(model, "lm_head", None)),
                 key=lambda layer: layer.weight.numel(), default=layers[0][2])
    try:
        if not _matches(widest):
            log.warning("oneDNN prepacked linear disagrees with F.linear on this CPU; keeping torch's default")
            return GemmChoice("native", "float linears: torch's default (oneDNN's result did not match)")
    except RuntimeError as exc:
        log.warning("oneDNN prepacked linear unavailable (%s); keeping torch's default", exc)
        return GemmChoice("native", "float linears: torch's default (oneDNN prepacking failed)")
    timing = ""
    if mode == "auto":
        native, onednn = _race(widest)
        timing = f", {native / onednn:.2f}x torch's default on this CPU"
        if onednn >= native:
            log.info("CPU GEMM: torch's default kept (oneDNN %.2f ms, default %.2f ms on a %dx%d layer)",
                     onednn * 1e3, native * 1e3, widest.out_features, widest.in_features)
            return GemmChoice("native", f"float linears: torch's default, faster than oneDNN on this CPU "
                                        f"({onednn / native:.2f}x its time)")
    for parent, name, layer in layers:
        setattr(parent, name, PackedLinear(layer))
    log.info("CPU GEMM: %d linear layers prepacked for oneDNN%s", len(layers), timing)
    return GemmChoice("onednn", f"float linears: oneDNN prepacked{timing}", len(layers))


def bf16_head(model: Any) -> str | None:
    """The int8 mode's lm_head in bfloat16 (oneDNN prepacked) where this CPU multiplies bfloat16 faster than
    float32: the largest single weight of a small model (a fifth of the bytes an int8 decode step reads for the
    embedded model) at half the bytes, for +0.12 % perplexity (docs/benchmarks.md). Returns what was done, for
    dtype_reason; None (lm_head left as it is) where bfloat16 is not faster or not available."""
    head = getattr(model, "lm_head", None)
    if type(head) is not torch.nn.Linear or head.weight.dtype != torch.float32 or head.weight.device.type != "cpu" \
            or not onednn_available():
        return None
    try:
        half, full = PackedLinear(head, torch.bfloat16), PackedLinear(head)
        with torch.inference_mode():
            x = torch.randn(3, head.in_features)
            expected = full(x)
            if not bool(((half(x) - expected).abs().max() <= 0.05 * (float(expected.abs().max()) or 1.0))):
                return None
            timed = [sum(_time(lambda: layer(torch.randn(rows, head.in_features)), 5) for rows in (1, 8))
                     for layer in (full, half)]
    except RuntimeError as exc:  # no bfloat16 kernel on this CPU
        log.info("lm_head stays float32 (bfloat16 oneDNN linear unavailable: %s)", exc)
        return None
    if timed[1] >= timed[0]:
        return None
    model.lm_head = half
    return f"lm_head bfloat16 (oneDNN prepacked, {timed[0] / timed[1]:.2f}x float32 on this CPU)"
