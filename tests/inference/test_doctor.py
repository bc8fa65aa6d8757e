"""The doctor command: exit code and readable reasons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ..conftest import DEFAULT_MODEL
from ..servers import ROOT


def doctor(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inference.doctor"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_embedded_model_on_this_machine_is_ready() -> None:
    run = doctor(INFERENCE_MODEL_PATH=str(DEFAULT_MODEL))
    assert run.returncode == 0, run.stdout
    assert "LlamaForCausalLM" in run.stdout and "ready to start" in run.stdout and "Plan" in run.stdout


def test_missing_shard_and_missing_gpu_are_problems(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
                                                      "num_attention_heads": 4, "num_hidden_layers": 2,
                                                      "intermediate_size": 128, "vocab_size": 100}))
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({
        "metadata": {"total_size": 10}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                       "b": "model-00002-of-00002.safetensors"}}))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x" * 5)
    run = doctor(INFERENCE_MODEL_PATH=str(tmp_path), INFERENCE_DEVICE="cuda")
    assert run.returncode == 1
    assert "model-00002-of-00002.safetensors" in run.stdout
    assert "no NVIDIA GPU" in run.stdout
    assert "chat template" in run.stdout  # a warning, named


def test_missing_model_folder() -> None:
    run = doctor(INFERENCE_MODEL_PATH="/nonexistent/model")
    assert run.returncode == 1 and "does not exist" in run.stdout
