"""scripts/quantize.py for real on this CPU: bnb-int8 on the embedded model, reloaded and answering."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import DEFAULT_MODEL
from ..servers import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("bitsandbytes")
    out = tmp_path_factory.mktemp("q") / "smollm2-bnb-int8"
    run = subprocess.run([sys.executable, "scripts/quantize.py", "--model", str(DEFAULT_MODEL), "--method", "bnb-int8",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return out


def test_report(quantized: Path) -> None:
    report = json.loads((quantized / "quantization-report.json").read_text())
    assert report["method"] == "bnb-int8"
    assert report["size_after_bytes"] < report["size_before_bytes"] * 0.5
    ppl = report["perplexity"]
    assert ppl["before"] > 1 and abs(ppl["change_percent"]) < 10, ppl
    assert "Paris" in report["smoke_test"]["after"]
    assert report["vram_plan"]["kv_bytes_per_token_fp16"] == 2 * 30 * 3 * 64 * 2
    assert "perplexity" in (quantized / "QUANTIZATION.md").read_text()


def test_the_engine_serves_the_int8_folder(quantized: Path) -> None:
    from inference.engines.transformers_engine import TransformersEngine
    from inference.settings import InferenceSettings
    from inference.types import ChatTurn, GenerationRequest, SamplingParams

    async def run() -> tuple[str, str | None]:
        engine = TransformersEngine(InferenceSettings(model_path=quantized))
        await engine.start()
        try:
            ids = tuple(engine.tokenize_chat([ChatTurn("user", "What is the capital of France?")]))
            text = ""
            async for delta in engine.generate(GenerationRequest("q", ids, SamplingParams(max_tokens=16,
                                                                                           temperature=0))):
                text += delta.text
            return text, engine.info().quantization
        finally:
            await engine.close()

    text, quantization = asyncio.run(run())
    assert "Paris" in text and quantization == "bitsandbytes"
