"""The one loader module (inference/engines/loading.py): location, quantisation, device, dtype, tokens,
context window. Pure functions, no model."""

from __future__ import annotations

import enum
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from inference.cpu import CpuInfo
from inference.engines.errors import StartupError
from inference.engines.loading import (DEFAULT_MAX_MODEL_LEN, choose_device, choose_dtype, context_window,
                                       eos_token_ids, folder_quantization, loaded_quantization, model_location,
                                       pad_token_id, unloaded_info)
from inference.settings import InferenceSettings

from ..servers import ROOT

PLAIN_CPU = CpuInfo("AMD EPYC", frozenset({"avx2"}), 2)


def test_model_location_folder_gguf_or_neither(tmp_path: Path) -> None:
    assert model_location(tmp_path) == (str(tmp_path), {})
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert model_location(gguf) == (str(tmp_path), {"gguf_file": "m.gguf"})
    (tmp_path / "weights.bin").write_bytes(b"")
    for path in (tmp_path / "weights.bin", tmp_path / "absent"):
        with pytest.raises(FileNotFoundError, match="neither a model folder nor a .gguf file"):
            model_location(path)


def test_quantisation_is_read_from_the_parsed_config_only(tmp_path: Path) -> None:
    # the word in a name or a comment is not a scheme: the config is parsed, never searched as text
    (tmp_path / "config.json").write_text(json.dumps({"_name_or_path": "llama-compressed-tensors-bitsandbytes"}))
    assert folder_quantization(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "bitsandbytes",
                                                                              "load_in_8bit": True}}))
    assert folder_quantization(tmp_path).name == "bnb-int8"


def test_loaded_quantization_reads_objects_dicts_and_enum_members() -> None:
    class Method(str, enum.Enum):
        BITS_AND_BYTES = "bitsandbytes"

    class Config:
        def to_dict(self) -> dict:
            return {"quant_method": Method.BITS_AND_BYTES, "load_in_8bit": True}

    assert loaded_quantization(types.SimpleNamespace(quantization_config=Config())) == "bitsandbytes"
    assert loaded_quantization(types.SimpleNamespace(quantization_config={"quant_method": "gguf"})) == "gguf"
    assert loaded_quantization(types.SimpleNamespace()) is None


def test_device_choice() -> None:
    assert choose_device("auto", True) == "cuda" and choose_device("auto", False) == "cpu"
    assert choose_device("cpu", True) == "cpu" and choose_device("cuda", True) == "cuda"
    with pytest.raises(StartupError, match="INFERENCE_DEVICE=cuda but no GPU here"):
        choose_device("cuda", False, missing="no GPU here")


def test_dtype_choice_and_its_reason() -> None:
    assert choose_dtype("auto", "cuda").dtype == "float16"
    assert choose_dtype("auto", "cpu").reason == "float32 on the CPU: exact on every x86 CPU"
    assert choose_dtype("bfloat16", "cpu").reason == "set by INFERENCE_DTYPE"
    assert choose_dtype("auto", "cpu", cpu=PLAIN_CPU).dtype == "float32"  # vLLM's CPU rule: cpu_dtype
    assert choose_dtype("auto", "cuda", cpu=PLAIN_CPU).dtype == "float16"  # the CPU is irrelevant on the GPU


def test_eos_and_pad_ids() -> None:
    assert eos_token_ids(2, [2, 7], None, (9,)) == frozenset({2, 7, 9})
    assert eos_token_ids(None, None) == frozenset()
    assert pad_token_id(5, frozenset({2})) == 5
    assert pad_token_id(None, frozenset({7, 2})) == 2
    assert pad_token_id(None, frozenset()) == 0


def test_context_window_from_settings_and_config() -> None:
    assert context_window(None, 8192) == DEFAULT_MAX_MODEL_LEN == 4096
    assert context_window(None, 2048) == 2048
    assert context_window(512, 2048) == 512
    assert context_window(None, None) == 4096
    with pytest.raises(StartupError, match="INFERENCE_MAX_MODEL_LEN=4096 exceeds the model's "
                                           "max_position_embeddings=2048"):
        context_window(4096, 2048)


def test_unloaded_info(tmp_path: Path) -> None:
    info = unloaded_info("vllm", InferenceSettings(model_path=tmp_path / "m", max_num_seqs=3))
    assert (info.engine, info.model_name, info.max_model_len, info.device, info.max_num_seqs) == (
        "vllm", "m", 0, "unloaded", 3)
    assert info.vocab_size is None and info.torch is None


def test_importing_the_loader_loads_no_torch() -> None:
    code = "import sys, inference.engines.loading, inference.doctor_checks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
