"""scripts/quantize.py --method int8 for real on this CPU: the CPU int8 mode's perplexity report (no model saved)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..conftest import DEFAULT_MODEL
from ..servers import ROOT

pytestmark = pytest.mark.slow


def test_int8_reports_perplexity(tmp_path) -> None:
    out = tmp_path / "smollm2-int8-report"
    run = subprocess.run([sys.executable, "scripts/quantize.py", "--model", str(DEFAULT_MODEL), "--method", "int8",
                          "--out", str(out)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads((out / "quantization-report.json").read_text())
    assert report["method"] == "int8" and report["device"] == "cpu"
    ppl = report["perplexity"]
    assert ppl["before"] > 1 and ppl["after"] > 1 and "change_percent" in ppl
    assert report["int8"]["linear_layers"] == 30 * 7 and "torch._int_mm" in report["int8"]["kernel"]
    assert "Paris" in report["smoke_test"]["after"]
    assert "perplexity" in (out / "QUANTIZATION.md").read_text()
    assert not (out / "model.safetensors").exists()  # applied at load: nothing to save


def test_int8_refuses_cuda() -> None:
    run = subprocess.run([sys.executable, "scripts/quantize.py", "--model", str(DEFAULT_MODEL), "--method", "int8",
                          "--device", "cuda"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "CPU int8 mode" in run.stderr
