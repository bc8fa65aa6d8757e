from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from .leftovers import MARKER, settle
from .servers import LIVE, ROOT, ServerProcess, free_port, inference_server

# The dingtalk-stream SDK reads this at import time: fix the emulator's address before any test imports it.
os.environ.setdefault("DINGTALK_OPENAPI_ENDPOINT", f"http://127.0.0.1:{free_port()}")
# Every process the tests start inherits this: the session's end finds and stops any left running.
os.environ[MARKER] = str(os.getpid())

DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct"
TEST_API_KEY = "sk-test-appliance-0123456789"
TEST_JWT_SECRET = "jwt-secret-for-the-test-servers-0123"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop whatever a test left running; a process still there afterwards fails the run."""
    leaked = list(LIVE)
    for process in leaked:
        process.stop()
    survivors = settle(os.getpid())
    if not leaked and not survivors:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"stopped at the session's end (a test did not stop it): {getattr(p, 'name', type(p).__name__)}"
             for p in leaked]
    lines += [f"still running after the session, killed: {p}" for p in survivors]
    for line in lines:
        reporter.write_line(line, red=True) if reporter else print(line)
    if survivors:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# Fixtures that need the embedded model: a test that asks for one must be marked slow, so that
# `make test-fast` (-m "not slow") runs on a checkout without the model.
MODEL_FIXTURES = frozenset({"inference", "small_inference", "embedded_model"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items if MODEL_FIXTURES & set(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("these tests need the embedded model but are not marked slow "
                                "(pytestmark = pytest.mark.slow):\n  " + "\n  ".join(unmarked))


def _require_model() -> None:
    if not (DEFAULT_MODEL / "model.safetensors").exists():
        pytest.fail("the embedded model is missing: run `python scripts/fetch_default_model.py` (make test does)")


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    """The embedded default model's folder, fetched (tests that read its files: tokenizer, config, manifest)."""
    _require_model()
    return DEFAULT_MODEL


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def inference(log_dir: Path) -> Iterator[ServerProcess]:
    """The real server on the real embedded model (default limits)."""
    _require_model()
    server = inference_server("inference-main", max_num_seqs=8, max_waiting=64, max_model_len=2048)
    server.start(log_dir).wait_ready()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def small_inference(log_dir: Path) -> Iterator[ServerProcess]:
    """A second real server with one slot, no queue, an API key and a JWT secret."""
    _require_model()
    server = inference_server("inference-small", max_num_seqs=1, max_waiting=0, api_key=TEST_API_KEY,
                              jwt_secret=TEST_JWT_SECRET, max_model_len=256)
    server.start(log_dir).wait_ready()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def emulator():
    """The DingTalk emulator, in this process, at DINGTALK_OPENAPI_ENDPOINT."""
    from connector.sandbox import EmulatorServer

    endpoint = urlparse(os.environ["DINGTALK_OPENAPI_ENDPOINT"])
    server = EmulatorServer(endpoint.hostname or "127.0.0.1", endpoint.port or 0, redeliver_after_s=60.0,
                            disconnect_close_after_s=1.0).start()
    yield server
    server.stop()
