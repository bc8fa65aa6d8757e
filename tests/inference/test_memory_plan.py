"""The VRAM planner and the vLLM engine's start-up sizing (pure arithmetic: no GPU, no vLLM needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.engines.errors import StartupError
from inference.engines.vllm_engine import engine_arguments
from inference.gpu import GpuInfo
from inference.memory_plan import (BLOCK_TOKENS, CUDA_CONTEXT_BYTES, FRAGMENTATION_BYTES, GIB, LLAMA_7B_CONFIG, MIB,
                                   activation_bytes, cudagraph_sizes, kv_bytes_per_token, method_of, overhead_for,
                                   Options, plan_for, sampler_bytes, shape_from_config, summary, weight_bytes)
from inference.settings import InferenceSettings

LLAMA = shape_from_config(LLAMA_7B_CONFIG)
W8A8_CONFIG = {**LLAMA_7B_CONFIG, "architectures": ["LlamaForCausalLM"], "quantization_config": {
    "quant_method": "compressed-tensors", "ignore": ["lm_head"], "config_groups": {"group_0": {
        "targets": ["Linear"], "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"},
        "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "dynamic": True}}}}}
CARD_8GB, T4 = int(7.6 * GIB), 15 * GIB


def gpu(total: float, free: float, capability: tuple[int, int] = (7, 5), name: str = "Tesla T4") -> GpuInfo:
    return GpuInfo(0, name, int(total * GIB), int(free * GIB), capability, "580.82.07", (13, 0))


def test_llama_7b_figures() -> None:
    assert 6.7e9 < LLAMA.params < 6.8e9  # 6.74 B
    assert kv_bytes_per_token(LLAMA) == 512 * 1024  # 2 x 32 layers x 32 heads x 128 x 2 bytes
    assert kv_bytes_per_token(LLAMA, "int8_per_token_head") == 264 * 1024  # 32 x 32 x (2 x 128 x 1 + 2 fp32 scales)
    assert 12.5 * GIB < weight_bytes(LLAMA, "fp16") < 12.6 * GIB
    int8 = weight_bytes(LLAMA, "w8a8")
    assert 6.52 * GIB < int8 < 6.53 * GIB  # INT8 linear layers, 16-bit embeddings and lm_head, fp32 row scales
    saved = int8 - weight_bytes(LLAMA, "w8a8", lm_head_quantized=True)
    assert saved == 32000 * 4096 * 2 - 32000 * 4096 - 32000 * 4  # lm_head 16 -> 8 bits, plus its row scales
    assert 3.5 * GIB < weight_bytes(LLAMA, "w4a16") < 3.7 * GIB


def test_overhead_parts_from_vllms_accounting() -> None:
    # the profiling forward at max_num_batched_tokens: the MLP phase dominates (residual, normed input and its
    # int8 copy, gate_up, the activation and its int8 copy): 2 x 4096 x 2 + 4096 + 4 x 11008 + 2 x 11008 + 11008
    assert activation_bytes(LLAMA, 2048, "w8a8") == 2048 * 97_536  # 190.5 MiB
    assert activation_bytes(LLAMA, 512, "fp16") == 512 * (4 * 4096 + 6 * 11008)
    assert sampler_bytes(LLAMA, 16, 2048) == 16 * 32000 * 23  # rows = min(max_num_seqs, batched tokens)
    assert cudagraph_sizes(16, 2048) == [1, 2, 4, 8, 16, 24, 32]  # up to 2 x max_num_seqs
    eager = overhead_for(LLAMA, Options(enforce_eager=True))
    graphs = overhead_for(LLAMA, Options(enforce_eager=False))
    assert eager.cuda_graphs == 0 and 40 * MIB < graphs.cuda_graphs < 60 * MIB
    assert eager.fragmentation == FRAGMENTATION_BYTES == 150 * MIB and eager.cuda_context == CUDA_CONTEXT_BYTES
    assert set(eager.parts()) == {"cuda_context", "non_torch", "activations", "sampler", "cuda_graphs", "fragmentation"}


def test_int8_7b_on_an_8gb_card_keeps_more_than_a_thousand_tokens() -> None:
    plan = plan_for(LLAMA, CARD_8GB, method="w8a8")
    assert plan.fits and plan.kv_tokens == 1456 and plan.max_model_len == 1456
    o = plan.options  # eager (no graph memory), 512 batched tokens (lower peak), INT8 KV (half the bytes)
    assert (o.enforce_eager, o.max_num_batched_tokens, o.kv_cache_dtype) == (True, 512, "int8_per_token_head")
    assert plan.kv_tokens % BLOCK_TOKENS == 0 and plan.max_num_seqs == 16
    assert plan.total_bytes <= plan.free_bytes and plan.kv_cache_bytes <= plan.kv_budget_bytes
    assert "6.53 weights" in plan.arithmetic() and "= 1456 tokens" in plan.arithmetic()
    args = plan.engine_arguments((7, 5))
    assert args["kv_cache_memory_bytes"] == 1456 * 264 * 1024 and args["kv_cache_dtype"] == "int8_per_token_head"
    assert args["enforce_eager"] and args["max_num_batched_tokens"] == 512 and args["attention_backend"] == "TRITON_ATTN"
    # vLLM still checks free memory at start against total x gpu_memory_utilization (request_memory)
    assert args["gpu_memory_utilization"] * CARD_8GB <= CARD_8GB - CUDA_CONTEXT_BYTES


def test_fp16_kv_on_an_8gb_card_does_not_reach_a_thousand_tokens_and_names_what_fits() -> None:
    plan = plan_for(LLAMA, CARD_8GB, method="w8a8", kv_cache_dtype="auto")
    assert not plan.fits and plan.kv_tokens == 752
    assert "752 tokens" in plan.reason and "1024" in plan.reason and "6.53 GiB" in plan.reason
    assert plan.alternative is not None and plan.alternative.options.method == "w4a16"  # lm_head int8: 943, short
    assert plan.alternative.fits and plan.alternative.max_model_len == 4096
    head = plan_for(LLAMA, CARD_8GB, method="w8a8", lm_head_quantized=True)
    # lm_head in INT8 saves 125 MiB: INT8 KV then reaches 1,024 tokens already at 2048 batched tokens
    assert head.fits and head.options.kv_cache_dtype == "int8_per_token_head" and head.kv_tokens == 1392
    assert head.options.max_num_batched_tokens == 2048
    fp16 = plan_for(LLAMA, CARD_8GB, method="fp16")
    assert not fp16.fits and "12.55" in fp16.reason and fp16.alternative.options.method == "w8a8"


def test_int8_7b_on_a_16gb_t4() -> None:
    plan = plan_for(LLAMA, T4, method="w8a8")
    assert plan.fits and plan.max_model_len == 4096 and plan.kv_tokens == 15520
    assert plan.options == Options(method="w8a8", kv_cache_dtype="auto", enforce_eager=False,
                                   max_num_batched_tokens=2048, max_num_seqs=16)
    assert plan.engine_arguments()["kv_cache_memory_bytes"] == 15520 * 512 * 1024


def test_a_shorter_window_asked_for_keeps_the_fp16_kv_cache() -> None:
    plan = plan_for(LLAMA, CARD_8GB, method="w8a8", want_model_len=512)
    assert plan.fits and plan.max_model_len == 512 and plan.options.kv_cache_dtype == "auto" and plan.kv_tokens == 752


def test_max_num_seqs_is_not_capped_by_the_kv_pool_and_fp8_kv_needs_sm89() -> None:
    plan = plan_for(LLAMA, CARD_8GB, method="w8a8", want_seqs=64)
    assert plan.fits and plan.max_num_seqs == 64 and plan.overhead.sampler == 64 * 32000 * 23
    with pytest.raises(ValueError, match="8.9"):
        plan_for(LLAMA, T4, method="w8a8", kv_cache_dtype="fp8", capability=(7, 5))
    assert plan_for(LLAMA, T4, method="w8a8", kv_cache_dtype="fp8", capability=(8, 9)).kv_bytes_per_token == 256 * 1024


def test_method_from_a_checkpoint() -> None:
    assert method_of(W8A8_CONFIG) == ("w8a8", False)
    quantized_head = {**W8A8_CONFIG, "quantization_config": {**W8A8_CONFIG["quantization_config"], "ignore": []}}
    assert method_of(quantized_head) == ("w8a8", True)
    assert method_of(LLAMA_7B_CONFIG) == ("fp16", False)


def test_summary_for_the_report() -> None:
    report = summary(LLAMA, "w8a8")
    assert report["8GB"]["fits"] and report["8GB"]["examples"]["1024x1"] and not report["8GB"]["examples"]["2048x4"]
    assert report["16GB"]["examples"]["2048x4"] and not report["16GB"]["examples"]["4096x8"]
    assert report["weight_bytes"] == weight_bytes(LLAMA, "w8a8") and "arithmetic" in report["8GB"]


def _llama_folder(tmp_path: Path, config: dict = W8A8_CONFIG) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_engine_arguments_on_a_t4(tmp_path: Path) -> None:
    settings = InferenceSettings(model_path=_llama_folder(tmp_path), engine="vllm", max_num_seqs=16)
    args = engine_arguments(settings, gpu(15, 14.5), "compressed-tensors")
    assert args["dtype"] == "float16" and args["attention_backend"] == "TRITON_ATTN"
    assert args["max_model_len"] == 4096 and args["max_num_seqs"] == 16 and not args["enforce_eager"]
    assert args["kv_cache_memory_bytes"] > 13_000 * 512 * 1024 and "kv_cache_dtype" not in args
    small = engine_arguments(settings, gpu(7.6, 7.6, name="RTX 2080"), "compressed-tensors")
    assert small["kv_cache_dtype"] == "int8_per_token_head" and small["enforce_eager"] and small["max_model_len"] >= 1024


def test_engine_arguments_refuse_small_cards_and_oversized_contexts(tmp_path: Path) -> None:
    folder = _llama_folder(tmp_path)
    with pytest.raises(StartupError, match="at least 8 GB"):
        engine_arguments(InferenceSettings(model_path=folder, engine="vllm"), gpu(6, 6, name="RTX 2060"),
                         "compressed-tensors")
    (tmp_path / "fp16").mkdir()
    fp16 = _llama_folder(tmp_path / "fp16", LLAMA_7B_CONFIG)
    with pytest.raises(StartupError, match=r"does not fit GPU RTX 3070 \(8.00 GiB free.*12.55 weights.*What fits: w8a8"):
        engine_arguments(InferenceSettings(model_path=fp16, engine="vllm"), gpu(8, 8, (8, 6), "RTX 3070"), None)
    with pytest.raises(StartupError, match="at most 1456 tokens"):
        engine_arguments(InferenceSettings(model_path=folder, engine="vllm", max_model_len=4096),
                         gpu(7.6, 7.6, (8, 6), "RTX 3070"), "compressed-tensors")
    cpu = engine_arguments(InferenceSettings(model_path=folder, engine="vllm"), None, None)
    assert cpu["dtype"] == "float32" and cpu["enforce_eager"]
