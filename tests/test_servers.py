"""The test harness itself: a server whose start fails fails its test at once and leaves nothing behind."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from .leftovers import marked_processes
from .servers import LIVE, ServerProcess, inference_server

pytestmark = pytest.mark.slow


def _gone(server: ServerProcess) -> bool:
    return server.proc is not None and server.proc.poll() is not None and server not in LIVE


def test_a_failed_model_load_fails_wait_ready_within_seconds(tmp_path: Path, log_dir: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    server = inference_server("inference-broken", model_path=broken)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="failed to start") as failure:
        server.start(log_dir).wait_ready(timeout=300)
    assert time.monotonic() - started < 60  # not the 300 s timeout
    assert "its last log lines" in str(failure.value) and "the model failed to load" in str(failure.value)
    assert _gone(server)
    assert not [p for p in marked_processes() if p.pid == server.proc.pid]


def test_a_process_that_exits_fails_wait_ready_at_once(log_dir: Path) -> None:
    server = ServerProcess("exits", ["-c", "import sys; print('bad flag'); sys.exit(3)"], port_flag=False,
                           python=sys.executable)
    with pytest.raises(RuntimeError, match="exited with 3") as failure:
        server.start(log_dir).wait_ready(timeout=300)
    assert "bad flag" in str(failure.value) and _gone(server)


def test_stop_takes_the_children_along(log_dir: Path) -> None:
    """Like vLLM's engine core: a child of the server is stopped with it (process group)."""
    script = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
              "time.sleep(600)")
    server = ServerProcess("with-child", ["-c", script], port_flag=False, python=sys.executable).start(log_dir)
    time.sleep(1.0)
    pids = {p.pid for p in marked_processes() if "time.sleep(600)" in p.command}
    assert len(pids) == 2
    server.stop(timeout=5)
    time.sleep(0.3)
    assert not {p.pid for p in marked_processes()} & pids
