"""Personal data stays out of every log file of a whole run: the emulator, the connector (debug logging) and the
inference server each in their own process, messages carrying a valid ID-card and bank-card number; the
near-miss order number in the same messages is logged untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..servers import ServerProcess, inference_server
from .conftest import connector_process, start_connector
from .core.test_pii import CARD16, ID, ORDER16
from .helpers import finalized
from .sandbox.helpers import new_app, send

pytestmark = pytest.mark.slow


def test_no_id_or_bank_card_number_in_any_log(log_dir: Path, tmp_path: Path) -> None:
    run_logs = tmp_path / "logs"
    run_logs.mkdir()
    emulator = ServerProcess("emulator-pii", ["-m", "connector.sandbox"])
    model = inference_server("inference-pii", log_level="debug", max_model_len=1024)
    started: list[ServerProcess] = []
    try:
        started.append(emulator.start(run_logs))
        emulator.wait_ready("/healthz", timeout=30)
        started.append(model.start(run_logs))
        model.wait_ready()
        client_id, secret = new_app(emulator)
        started.append(start_connector(connector_process("connector-pii", emulator=emulator, client_id=client_id,
                                                         secret=secret, model_url=model.url + "/v1"),
                                       run_logs, emulator, client_id))
        conversations = set()
        for text in (f"我的身份证号是{ID}，请记住。", f"退款到卡号 {CARD16} 吗？订单号{ORDER16}",
                     f"订单{ORDER16}：身份证 {ID}，卡 {CARD16}"):
            conversations.add(send(emulator, client_id, text, user="pii-user")["conversationId"])
        for conversation in conversations:
            finalized(emulator, conversation, 3, timeout=120)
    finally:
        for process in reversed(started):
            process.stop()
    logs = {path.name: path.read_text(errors="replace") for path in run_logs.glob("*.log")}
    assert set(logs) == {"emulator-pii.log", "inference-pii.log", "connector-pii.log"}
    for name, text in logs.items():
        (log_dir / name).write_text(text)  # kept with the session's logs
        assert ID not in text and CARD16 not in text, f"{name} shows personal data"
    # the messages were logged (masked), the order number untouched
    for name in ("emulator-pii.log", "connector-pii.log"):
        assert "11************002X" in logs[name] and f"6222********{CARD16[-4:]}" in logs[name], logs[name][-3000:]
        assert ORDER16 in logs[name]
