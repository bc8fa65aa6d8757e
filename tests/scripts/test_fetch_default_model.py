"""The embedded model script is idempotent and checksum-verified."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..servers import ROOT

pytestmark = pytest.mark.slow  # verifies the fetched model (and would download it, were it missing)


def test_second_run_is_a_no_op_and_verifies(embedded_model: Path) -> None:
    out = subprocess.run([sys.executable, "scripts/fetch_default_model.py", "--verify"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "up to date and verified" in out
    manifest = json.loads((embedded_model / "appliance-manifest.json").read_text())
    assert manifest["gguf_sha256"] and "model.safetensors" in manifest["files"]
    assert {"config.json", "tokenizer.json", "chat_template.jinja"} <= set(manifest["files"])
