"""Every entry point answers --help with its usage and exits at once, without side effects (no server started,
no model loaded, no file written): a user's first `--help` must never start the appliance."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from .servers import ROOT

MODULES = ["inference", "inference.doctor", "inference.tokens", "connector", "connector.sandbox",
           "connector.skills", "connector.audit", "connector.doctor"]
SCRIPTS = sorted(p.name for p in (ROOT / "scripts").glob("*.py")
                 if not p.name.startswith("_") and "__main__" in p.read_text())


@pytest.mark.parametrize("command", [["-m", m] for m in MODULES] + [[f"scripts/{s}"] for s in SCRIPTS],
                         ids=lambda c: c[-1])
def test_help_answers_without_side_effects(command: list[str], tmp_path) -> None:
    before = set(ROOT.iterdir())
    started = time.monotonic()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CONNECTOR_CLIENT_ID": "app",
           "CONNECTOR_CLIENT_SECRET": "secret-that-would-start-it"}
    done = subprocess.run([sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
    assert time.monotonic() - started < 30
    assert set(ROOT.iterdir()) == before
    assert "listening" not in done.stdout + done.stderr
