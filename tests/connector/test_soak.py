"""A short soak of the full stack (the long one is scripts/soak.py; figures in docs/reliability.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..servers import ROOT

pytestmark = pytest.mark.slow


def test_short_soak_loses_and_duplicates_nothing(inference, tmp_path: Path, redis_server) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, "scripts/soak.py", "--duration", "25", "--rate", "1", "--users", "8",
                          "--model-url", inference.url + "/v1", "--redis", redis_server.url, "--json", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=400,
                         env={**__import__("os").environ, "SOAK_LOG_DIR": str(tmp_path)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["sent"] >= 20 and result["lost"] == 0 and result["duplicated"] == 0
    assert result["answered_once"] == result["sent"] and result["socket_dropped"]
    assert result["redeliveries_ignored"] >= result["redeliveries_injected"]


def test_inference_alone_under_mixed_prompt_lengths(tmp_path: Path) -> None:
    """soak.py --inference-only: its own server, mixed prompt lengths, the RSS curve and its plot."""
    out, png = tmp_path / "soak.json", tmp_path / "rss.png"
    run = subprocess.run([sys.executable, "scripts/soak.py", "--inference-only", "--duration", "6", "--rate", "2",
                          "--max-prompt-tokens", "300", "--max-tokens", "8", "--rss-every", "1", "--json", str(out),
                          "--rss-plot", str(png)], cwd=ROOT, capture_output=True, text=True, timeout=400,
                         env={**__import__("os").environ, "SOAK_LOG_DIR": str(tmp_path)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["sent"] >= 4 and result["ok"] == result["sent"] and result["failed"] == 0
    assert result["rss_curve_mib"]["inference"]["peak"] > 0 and result["rss_samples"] >= 3
    assert png.stat().st_size > 1000
