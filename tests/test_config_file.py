"""One configuration file for both processes; environment variables override; errors name the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from connector.settings import ConnectorSettings
from inference.settings import InferenceSettings

from .servers import ROOT


def test_shipped_example_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_CONFIG", str(ROOT / "deploy" / "appliance.toml.example"))
    inference = InferenceSettings()
    connector = ConnectorSettings()
    assert inference.engine == "vllm" and inference.default_max_tokens == 512
    assert connector.retry_attempts == 3 and connector.retry_backoff_factor == 1.5
    assert connector.temperature == 0.7 and connector.max_tokens == 512 and connector.channel == "stream"


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text('[connector]\ntemperature = 0.2\nmax_tokens = 100\n[inference]\nport = 9100\n')
    monkeypatch.setenv("APPLIANCE_CONFIG", str(config))
    monkeypatch.setenv("CONNECTOR_MAX_TOKENS", "300")
    settings = ConnectorSettings()
    assert settings.temperature == 0.2 and settings.max_tokens == 300
    assert InferenceSettings().port == 9100


@pytest.mark.parametrize("module, body, expected", [
    ("connector", "[connector]\ncard_qps = -1\n", "card_qps"),
    ("connector", "[connector]\ncard_qbs = 5\n", "card_qbs"),
    ("inference", "[inference]\nengine = \"tgi\"\n", "engine"),
    ("inference", "[inference\nport = 1\n", "not valid TOML"),
])
def test_invalid_configuration_names_the_key(tmp_path: Path, module: str, body: str, expected: str) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text(body)
    env = {**os.environ, "APPLIANCE_CONFIG": str(config), "CONNECTOR_CLIENT_ID": "x",
           "CONNECTOR_CLIENT_SECRET": "y"}
    run = subprocess.run([sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode != 0
    assert expected in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_the_two_readers_stay_equal() -> None:
    """connector/config_file.py is a copy of inference/config_file.py (the connector imports nothing of
    inference): the code below their docstrings must stay the same."""
    def code(path: Path) -> str:
        text = path.read_text()
        return text[text.index('"""', 3) + 3:]

    assert code(ROOT / "connector" / "config_file.py") == code(ROOT / "inference" / "config_file.py")
