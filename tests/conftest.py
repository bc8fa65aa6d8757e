from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .servers import ROOT, ServerProcess, inference_server

DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct"
TEST_API_KEY = "sk-test-appliance-0123456789"


def _require_model() -> None:
    if not (DEFAULT_MODEL / "model.safetensors").exists():
        pytest.fail("the embedded model is missing: run `python scripts/fetch_default_model.py` (make test does)")


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def inference(log_dir: Path) -> Iterator[ServerProcess]:
    """The real server on the real embedded model (default limits)."""
    _require_model()
    server = inference_server("inference-main", max_num_seqs=8, max_waiting=32, max_model_len=2048)
    server.start(log_dir).wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def small_inference(log_dir: Path) -> Iterator[ServerProcess]:
    """A second real server with one slot, no queue, and an API key."""
    _require_model()
    server = inference_server("inference-small", max_num_seqs=1, max_waiting=0, api_key=TEST_API_KEY,
                              max_model_len=256)
    server.start(log_dir).wait_ready()
    yield server
    server.stop()
