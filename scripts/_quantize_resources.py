"""Peak memory and the CPU time estimate for scripts/quantize.py (no torch import at module level)."""

from __future__ import annotations

import os
import sys
from typing import Any

# Measured on this project's 2-core build machine (AMD EPYC, torch 2.13 CPU, 2 threads, float32,
# llmcompressor 0.14.0.1), W8A8 recipe = a SmoothQuant pass and a GPTQ pass, each a sequential
# pipeline; docs/benchmarks.md "W8A8 quantisation: lm_head and memory". The machine was shared and
# identical runs took 35 s to 587 s: CPU seconds (user + system, all threads) vary less, and the
# median is used.
#   SmolLM2-135M-Instruct, 30 layers of 3.54 M linear parameters, 569 calibration tokens: 2.24, 9.65
#     and 12.12 CPU s per layer (load average 2.5, 3.5, 5.5); GPTQ's column loop, which does not grow
#     with the tokens, took 49-61 % of the wall time (0.6 below)
#   one Llama-7B-shaped decoder layer (202.4 M linear parameters, random weights), same tokens:
#     259 and 547 CPU s (223 s and 1242 s wall; load 3.2 and 8.9); the extrapolation predicts 552
REFERENCE = {"cpu": "AMD EPYC (2 cores)", "threads": 2, "dtype": "float32", "tokens": 569,
             "params_per_layer": 3_538_944, "cpu_seconds_per_layer": 9.65, "token_independent_share": 0.6,
             "measured": {"smollm2_cpu_seconds_per_layer": [2.24, 9.65, 12.12],
                          "llama7b_layer_cpu_seconds": [258.8, 547.2]}}


def layer_params(shape) -> int:
    """Linear parameters of one decoder layer (q k v o gate up down)."""
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    return 2 * shape.hidden * q + 2 * shape.hidden * kv + 3 * shape.hidden * shape.intermediate


def cpu_estimate(shape, tokens: int, *, lm_head: bool, threads: int | None = None) -> dict[str, Any]:
    """The W8A8 calibration time on the CPU alone, extrapolated by parameter count from the embedded
    model's measured CPU seconds per layer (REFERENCE):

        cpu_seconds = t_ref / P_ref x (layers x P_layer [+ vocab x hidden]) x (s + (1 - s) x tokens / tokens_ref)
        wall        = cpu_seconds / threads   (an otherwise idle machine)

    P: linear parameters per layer; s: the share of the time that does not grow with the calibration
    tokens (GPTQ). A rough figure: for a 7B-shaped layer it gives 552 CPU s where 259 and 547 were
    measured (the safe side); far larger calibration sets than ~570 tokens were not measured (at this size the
    forward passes are overhead-bound, so the token term is likely pessimistic); bfloat16 (chosen when
    float32 does not fit in RAM) was not measured and can be much slower on CPUs without bf16 units."""
    ref = REFERENCE
    threads = threads or ref["threads"]
    per_param = ref["cpu_seconds_per_layer"] / ref["params_per_layer"]
    token_factor = ref["token_independent_share"] + (1 - ref["token_independent_share"]) * tokens / ref["tokens"]
    layer = per_param * layer_params(shape) * token_factor
    head = per_param * shape.vocab * shape.hidden * token_factor if lm_head else 0.0
    cpu = shape.layers * layer + head
    return {"seconds": round(cpu / threads, 1), "cpu_seconds": round(cpu, 1),
            "per_layer_seconds": round(layer / threads, 2), "lm_head_seconds": round(head / threads, 1),
            "calibration_tokens": tokens, "threads": threads,
            "formula": f"cpu_s = {ref['cpu_seconds_per_layer']} s / {ref['params_per_layer'] / 1e6:.2f} M params x "
                       f"(layers x params per layer [+ vocab x hidden]) x ({ref['token_independent_share']} + "
                       f"{1 - ref['token_independent_share']:.1f} x tokens / {ref['tokens']}); wall = cpu_s / threads; "
                       f"measured on {ref['cpu']}, {ref['dtype']}",
            "measured_on": ref["cpu"]}


def human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads: unlike wall time, not inflated by other
    processes sharing the cores."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def rss_bytes() -> int | None:
    try:
        import psutil
        return int(psutil.Process().memory_info().rss)
    except ImportError:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return None


def available_bytes() -> int | None:
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None


class MemoryLog:
    """Peak RSS (getrusage ru_maxrss: the process's high-water mark, never goes down) and, with CUDA,
    torch.cuda.max_memory_allocated after each phase; the phase where the peak jumps is the one
    that set it."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.phases: list[dict[str, Any]] = []

    def reset_cuda_peak(self) -> None:
        if self.cuda:
            import torch
            torch.cuda.reset_peak_memory_stats()

    def mark(self, phase: str) -> dict[str, Any]:
        row: dict[str, Any] = {"phase": phase, "peak_rss_bytes": peak_rss_bytes(), "rss_bytes": rss_bytes()}
        if self.cuda:
            import torch
            row["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
        self.phases.append(row)
        return row

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"peak_rss_bytes": peak_rss_bytes(), "peak_rss_gib": round(peak_rss_bytes() / 2**30, 3),
                               "source": "resource.getrusage(RUSAGE_SELF).ru_maxrss", "phases": self.phases}
        if self.cuda:
            peaks = [p.get("cuda_max_allocated_bytes", 0) for p in self.phases]
            out["cuda_max_allocated_bytes"] = max(peaks, default=0)
            out["cuda_source"] = "torch.cuda.max_memory_allocated, reset before calibration and each evaluation"
        return out
