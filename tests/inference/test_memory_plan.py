"""The VRAM planner and the vLLM engine's start-up sizing (pure arithmetic: no GPU, no vLLM needed)."""

from __future__ import annotations

from pathlib import Path

import json
import pytest

from inference.engines.vllm_engine import StartupError, engine_arguments
from inference.memory_plan import (GIB, LLAMA_7B_CONFIG, kv_bytes_per_token, plan_for, shape_from_config,
                                   summary, weight_bytes)
from inference.settings import InferenceSettings

LLAMA = shape_from_config(LLAMA_7B_CONFIG)


def test_llama_7b_figures() -> None:
    assert 6.7e9 < LLAMA.params < 6.8e9  # 6.74 B
    assert kv_bytes_per_token(LLAMA) == 512 * 1024  # 2 x 32 x 32 x 128 x 2 bytes
    assert 12.5 * GIB < weight_bytes(LLAMA, "fp16") < 12.6 * GIB
    int8 = weight_bytes(LLAMA, "w8a8")
    assert 6.2 * GIB < int8 < 6.6 * GIB  # INT8 linear layers, 16-bit embeddings and lm_head, scales


def test_int8_7b_on_an_8gb_card_keeps_about_a_thousand_tokens() -> None:
    plan = plan_for(LLAMA, 8 * GIB, method="w8a8")
    assert plan.fits
    assert 600 <= plan.kv_tokens <= 1500  # the reference puts it at about 800-1,400
    assert plan.max_model_len == plan.kv_tokens and plan.max_num_seqs >= 1
    assert plan.weight_bytes + plan.overhead_bytes + plan.kv_tokens * plan.kv_bytes_per_token <= 8 * GIB * 0.94


def test_int8_7b_on_a_16gb_t4_and_fp16_on_8gb() -> None:
    t4 = plan_for(LLAMA, 15 * GIB, method="w8a8")
    assert t4.fits and t4.kv_tokens > 10_000 and t4.max_model_len == 4096
    fp16 = plan_for(LLAMA, 8 * GIB, method="fp16")
    assert not fp16.fits and "KV cache" in fp16.reason


def test_summary_for_the_report() -> None:
    report = summary(LLAMA, "bnb-int8")
    assert report["8GB"]["fits"] and report["8GB"]["examples"]["512x1"]
    assert not report["8GB"]["examples"]["4096x8"] and report["16GB"]["examples"]["2048x4"]


def _llama_folder(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_7B_CONFIG))
    return tmp_path


def test_engine_arguments_on_a_t4(tmp_path: Path) -> None:
    settings = InferenceSettings(model_path=_llama_folder(tmp_path), engine="vllm", max_num_seqs=16)
    args = engine_arguments(settings, ("Tesla T4", 15 * GIB, int(14.5 * GIB), (7, 5)), "compressed-tensors")
    assert args["dtype"] == "float16" and args["attention_backend"] == "TRITON_ATTN"
    assert args["max_model_len"] == 4096 and 1 <= args["max_num_seqs"] <= 16


def test_engine_arguments_refuse_small_cards_and_oversized_contexts(tmp_path: Path) -> None:
    folder = _llama_folder(tmp_path)
    with pytest.raises(StartupError, match="at least 8 GB"):
        engine_arguments(InferenceSettings(model_path=folder, engine="vllm"), ("RTX 2060", 6 * GIB, 6 * GIB, (7, 5)),
                         "compressed-tensors")
    with pytest.raises(StartupError, match="does not fit"):
        engine_arguments(InferenceSettings(model_path=folder, engine="vllm"), ("RTX 3070", 8 * GIB, 8 * GIB, (8, 6)),
                         None)
    with pytest.raises(StartupError, match="at most"):
        engine_arguments(InferenceSettings(model_path=folder, engine="vllm", max_model_len=4096),
                         ("RTX 3070", 8 * GIB, int(7.8 * GIB), (8, 6)), "compressed-tensors")
    cpu = engine_arguments(InferenceSettings(model_path=folder, engine="vllm"), None, None)
    assert cpu["dtype"] == "float32" and cpu["enforce_eager"]
