"""INT8 on the CPU for the transformers engine (INFERENCE_QUANTIZATION=int8): int8 weights, one scale per
output channel, and int8 activations quantised dynamically, one scale per token, multiplied by torch's
int8 GEMM (`torch._int_mm`: oneDNN, which uses AVX512-VNNI, or AMX tiles where the CPU has them).

Applied at load to every nn.Linear of the decoder (lm_head stays float: in int8 it costs the most
perplexity, +0.65 % on the embedded model, docs/benchmarks.md; in bfloat16, where the CPU multiplies that
faster, +0.12 % for half its bytes); nothing is saved. With
INFERENCE_INT8_ROTATION=true a Llama-style model is first rotated (`cpu_rotation.rotate`: the same model in
float, with activations whose outliers are spread over every channel), which cuts the perplexity cost of
per-token int8 activations on long texts, at some speed (docs/benchmarks.md).
`scripts/quantize.py --method int8` reports the perplexity change on the same code.

Why not a library's ready-made module (measured on AMD EPYC, 2 cores, torch 2.13, docs/benchmarks.md
"INT8 on the CPU"): torchao 0.18's `Int8DynamicActivationInt8WeightConfig` is the same arithmetic, but in
eager mode its tensor subclass made a decode step about 5x *slower* than float32, and with
`torch.compile` the first step did not finish compiling in 10 minutes on this box;
`torch.ao.quantization.quantize_dynamic` (fbgemm) is fast but quantises activations with one scale per
tensor, which raised the embedded model's perplexity from 20.4 to 61-70. So the weights are quantised
here (a few lines of arithmetic) and the GEMM is torch's; for a single row (one sequence decoding, where
one scale per tensor *is* one per token) the fused fbgemm kernel `quantized::linear_dynamic` is used, which
quantises the activation inside C++ and saves the half-dozen small ops that dominate at that size.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from .cpu_linear import bf16_head
from .cpu_rotation import rotate
from .lean_decoder import fuse_projections

log = logging.getLogger("inference.engine")

METHOD = "int8"


@dataclass(frozen=True)
class Int8Report:
    layers: int  # nn.Linear modules replaced
    kernel: str  # what multiplies, for /version and the logs
    float_bytes: int  # bytes of the replaced float weights
    int8_bytes: int  # bytes of their int8 weights and scales
    rotation: str | None = None  # cpu_rotation.rotate's description; None: the model was not rotated
    head: str | None = None  # cpu_linear.bf16_head's description; None: lm_head left float32


def _quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8, one scale per output channel (row): (int8 weight, float32 scales)."""
    weight = weight.detach().float()
    scales = weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(weight / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scales


def _fbgemm_available() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines or "x86" in torch.backends.quantized.supported_engines


class Int8Linear(torch.nn.Module):
    """y = (per-token int8 x) @ (per-channel int8 W)^T, rescaled, + bias; float in, float out."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        q, scales = _quantize_rows(linear.weight)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_t", q.t().contiguous(), persistent=False)  # [in, out] for _int_mm
        self.register_buffer("scales", scales, persistent=False)
        bias = linear.bias.detach().float().clone() if linear.bias is not None else None
        self.register_buffer("bias", bias, persistent=False)
        self._packed = None
        if _fbgemm_available():  # the fused single-row kernel: same int8 weight, same per-channel scales
            with warnings.catch_warnings():  # torch marks its quantized dtypes deprecated; fbgemm still takes them
                warnings.simplefilter("ignore")
                qweight = torch.quantize_per_channel(q.float() * scales[:, None], scales.double(),
                                                     torch.zeros_like(scales, dtype=torch.long), 0, torch.qint8)
                self._packed = torch.ops.quantized.linear_prepack(qweight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, self.in_features).float()
        if rows.shape[0] == 1 and self._packed is not None:
            out = torch.ops.quantized.linear_dynamic(rows, self._packed, False)
        else:
            step = rows.abs().amax(dim=1, keepdim=True).clamp_min_(1e-12).div_(127.0)
            q = torch.round(rows / step).clamp_(-127, 127).to(torch.int8)
            out = torch._int_mm(q, self.weight_t).float().mul_(step).mul_(self.scales)
            if self.bias is not None:
                out.add_(self.bias)
        return out.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel x per-token"


def quantize_decoder(model: Any, rotation: bool = False, fuse: bool = False, head_bf16: bool = False
                     ) -> Int8Report:
    """Replace every nn.Linear under the model's decoder (`model.model`, or the model itself when it has
    none) with Int8Linear, in place, after rotating a Llama-style model if `rotation` and fusing its
    projections for the lean forward if `fuse` (lean_decoder.py); lm_head stays float, in bfloat16 if
    `head_bf16` and this CPU multiplies it faster so (cpu_linear.bf16_head). Needs a float model on the CPU."""
    rotated = rotate(model) if rotation else None
    if fuse:
        fuse_projections(model)
    root = getattr(model, "model", model)
    replaced, float_bytes, int8_bytes = 0, 0, 0
    for name, module in list(root.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear:
                float_bytes += child.weight.numel() * child.weight.element_size()
                int8_bytes += child.weight.numel() + child.out_features * 4
                setattr(module, child_name, Int8Linear(child))
                replaced += 1
    if not replaced:
        raise ValueError("the model has no nn.Linear layers to quantise")
    kernel = describe_kernel()
    head = bf16_head(model) if head_bf16 else None
    log.info("int8: %d linear layers quantised (%.0f -> %.0f MiB), %s; %s; %s", replaced, float_bytes / 2**20,
             int8_bytes / 2**20, kernel, rotated or "not rotated", head or "lm_head float32")
    return Int8Report(replaced, kernel, float_bytes, int8_bytes, rotated, head)


def describe_kernel() -> str:
    """'torch._int_mm (oneDNN: AMX|AVX512-VNNI|...) + fbgemm for single rows', as torch sees this CPU."""
    try:
        amx = bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:
        amx = False
    try:
        vnni = bool(torch.cpu._is_vnni_supported())  # private in torch 2.x, as _is_amx_tile_supported
    except AttributeError:
        vnni = False
    isa = "AMX" if amx else "AVX512-VNNI" if vnni else "no VNNI/AMX"
    single = " + fbgemm for single rows" if _fbgemm_available() else ""
    return f"torch._int_mm (oneDNN, {isa}){single}"
