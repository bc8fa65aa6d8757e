"""W8A8 (SmoothQuant + GPTQ, compressed-tensors) on this CPU with llm-compressor, in its own environment
(.venv-w8a8: llm-compressor pins transformers <= 5.17), then served by our server on the vLLM engine."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from inference.cpu import cpu_info

from ..conftest import DEFAULT_MODEL
from ..servers import ROOT, ServerProcess

pytestmark = pytest.mark.slow

# Factual questions the W8A8 model answers at temperature 0 (checked in float32 and in bfloat16 on AMD EPYC).
# Not "What is the capital of France?": in float32 the quantised 135M model answers it in French, without
# Paris (its quantisation report's smoke test shows the same), while bfloat16 says Paris.
FACTS = {"What is the capital of Germany?": "Berlin", "What is the largest ocean on Earth?": "Pacific",
         "What is 2 + 2?": "4"}
W8A8_PYTHON = ROOT / ".venv-w8a8" / "bin" / "python"
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


@pytest.fixture(scope="module")
def w8a8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not W8A8_PYTHON.exists():
        pytest.skip("no .venv-w8a8 (make test-w8a8 creates it)")
    out = tmp_path_factory.mktemp("w8a8") / "smollm2-w8a8"
    run = subprocess.run([str(W8A8_PYTHON), "scripts/quantize.py", "--model", str(DEFAULT_MODEL), "--method", "w8a8",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=1200,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return out


def test_w8a8_report_and_format(w8a8: Path) -> None:
    report = json.loads((w8a8 / "quantization-report.json").read_text())
    assert report["method"] == "w8a8" and report["size_after_bytes"] < report["size_before_bytes"] * 0.5
    assert abs(report["perplexity"]["change_percent"]) < 10
    config = json.loads((w8a8 / "config.json").read_text())
    quant = config["quantization_config"]
    assert quant["quant_method"] == "compressed-tensors"
    weights = quant["config_groups"]["group_0"]["weights"]
    activations = quant["config_groups"]["group_0"]["input_activations"]
    assert weights["num_bits"] == 8 and activations["num_bits"] == 8 and weights["type"] == "int"


def test_w8a8_served_by_the_vllm_engine(w8a8: Path, log_dir: Path) -> None:
    """Served in the dtype this CPU's int8 kernel needs (bfloat16 with AMX, float32 without), and right."""
    if not VLLM_PYTHON.exists():
        pytest.skip("no .venv-vllm (make test-vllm creates it)")
    server = ServerProcess("inference-w8a8", ["-m", "inference"], python=str(VLLM_PYTHON),
                           env={"INFERENCE_ENGINE": "vllm", "INFERENCE_MODEL_PATH": str(w8a8),
                                "INFERENCE_MAX_MODEL_LEN": "1024"})
    server.start(log_dir).wait_ready(timeout=300)  # stops the server and fails at once if its start fails
    try:
        version = httpx.get(server.url + "/version").json()
        assert version["quantization"] == "compressed-tensors"
        cpu = cpu_info()
        assert version["dtype"] == ("bfloat16" if cpu.amx else "float32"), (cpu.describe(), version)
        assert version["cpu"] == cpu.describe() and version["dtype_reason"]
        assert f"dtype {version['dtype']} ({version['dtype_reason']})" in server.log()  # the choice is logged
        answers = {}
        for question, fact in FACTS.items():
            reply = httpx.post(server.url + "/v1/chat/completions", timeout=120, json={
                "messages": [{"role": "user", "content": question}], "max_tokens": 24, "temperature": 0}).json()
            assert reply["usage"]["completion_tokens"] > 0
            answers[question] = reply["choices"][0]["message"]["content"]
        right = [q for q, fact in FACTS.items() if fact in answers[q]]
        assert len(right) >= 2, answers  # each was right in float32 and in bfloat16 on AMD EPYC
    finally:
        server.stop()
