"""The command line, generated from the settings, in `vllm serve`'s words."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from inference.cli import build_parser, flags_of, parse_args
from inference.settings import InferenceSettings

from ..servers import ROOT

VLLM_FLAGS = ["--model", "--served-model-name", "--host", "--port", "--api-key", "--max-model-len", "--max-num-seqs",
              "--max-num-batched-tokens", "--gpu-memory-utilization", "--dtype", "--quantization"]


def test_every_setting_has_a_flag_with_help() -> None:
    text = build_parser().format_help()
    for name, field in InferenceSettings.model_fields.items():
        assert flags_of(name, field)[0] in text, name
        assert field.description, f"{name} has no description: the flag's help would be empty"
        assert f"INFERENCE_{name.upper()}" in text


def test_vllm_serve_flags_are_understood() -> None:
    text = build_parser().format_help()
    assert all(flag in text for flag in VLLM_FLAGS)
    args = parse_args(["models/x", "--served-model-name", "llama-7b", "--max-num-batched-tokens", "2048",
                       "--gpu-memory-utilization", "0.85", "--max-num-seqs", "8", "--no-warmup"])
    settings = InferenceSettings(**args)  # type: ignore[arg-type]
    assert (str(settings.model_path), settings.model_name, settings.max_prefill_tokens) == ("models/x", "llama-7b", 2048)
    assert (settings.gpu_memory_utilization, settings.max_num_seqs, settings.warmup) == (0.85, 8, False)
    assert parse_args(["--model", "models/y"]) == {"model_path": "models/y"}
    assert parse_args([]) == {}


def test_bad_values_are_refused_by_the_settings_rules() -> None:
    with pytest.raises(SystemExit):
        parse_args(["a", "--model", "b"])  # two different models
    with pytest.raises(SystemExit):
        parse_args(["--dtype", "int4"])  # not a choice
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        InferenceSettings(**parse_args(["--gpu-memory-utilization", "1.5"]))  # type: ignore[arg-type]


def test_the_server_refuses_a_bad_flag_with_a_message_not_a_traceback() -> None:
    done = subprocess.run([sys.executable, "-m", "inference", "--max-num-seqs", "zero"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "max_num_seqs" in done.stderr and "Traceback" not in done.stderr


def test_console_scripts_for_every_entry_point() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    targets = {v.split(":")[0] for v in scripts.values()}
    for module in ("inference.main", "inference.doctor", "inference.tokens", "connector.main",
                   "connector.audit.cli", "connector.sandbox.server", "connector.skills.cli"):
        assert module in targets, module
