"""Document access end to end: the connector process with the knowledge base over folders with _access.toml,
the asker's departments from the emulator's contact API (/topapi/v2/user/get, set through /sandbox/directory),
the real SDK handshake, the real inference server. A reader of the department is answered from its folder with
the file cited; another department's asker gets nothing of it and the denial is recorded; a group chat uses only
open documents and says so; /kb lists only what the asker may read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from ....servers import ServerProcess
from ...conftest import connector_process, start_connector
from ...helpers import finalized, shown_texts
from ...sandbox.helpers import new_app, send, wait_for

pytestmark = pytest.mark.slow

BUDGET = ("Budget memo. The 2025 marketing budget of the East China region is 3.2 million yuan; the CFO approved "
          "it in March.")
CANTEEN = "Canteen notice. The staff canteen opens at 7:00 and closes at 19:30 on weekdays."
QUESTION = "What is the 2025 marketing budget of the East China region?"
NOTE = "某些受限文档未使用，请私聊我。"


@pytest.fixture
def access_connector(emulator, inference: ServerProcess, redis_server, log_dir: Path, tmp_path: Path):
    docs = tmp_path / "docs"
    (docs / "finance").mkdir(parents=True)
    (docs / "public").mkdir()
    (docs / "finance" / "budget.md").write_text(BUDGET, encoding="utf-8")
    (docs / "finance" / "_access.toml").write_text("departments = [10]\n", encoding="utf-8")
    (docs / "public" / "canteen.md").write_text(CANTEEN, encoding="utf-8")
    app = new_app(emulator)
    users = {"ann": f"ann-{uuid.uuid4().hex[:6]}", "bob": f"bob-{uuid.uuid4().hex[:6]}"}
    httpx.post(emulator.url + "/sandbox/directory",
               json={"app": app[0], "users": {users["ann"]: [10], users["bob"]: [20]}}).raise_for_status()
    plugins = {"knowledge_base": {"enabled": True, "folder": str(docs), "index_dir": str(tmp_path / "index"),
                                  "max_tokens": 48, "rescan_interval_s": 0, "top_k": 2}}
    audit = tmp_path / "audit.sqlite3"
    proc = connector_process(f"connector-access-{uuid.uuid4().hex[:6]}", emulator=emulator, client_id=app[0],
                             secret=app[1], model_url=inference.url + "/v1", redis_url=redis_server.url,
                             plugins=json.dumps(plugins), audit_path=str(audit),
                             audit_spill_path=str(tmp_path / "spill.jsonl"))
    start_connector(proc, log_dir, emulator, app[0])
    wait_for(lambda: httpx.get(proc.url + "/health").json()["skills"]["knowledge_base"]["state"] == "ready",
             timeout=90)
    yield app, proc, users, audit
    proc.stop()


def card_text(emulator, conversation_id: str, count: int = 1) -> str:
    return finalized(emulator, conversation_id, count, timeout=120)[count - 1]["texts"]["msgContent"]


def exported(audit: Path, user: str) -> list[dict]:
    env = {**os.environ, "CONNECTOR_AUDIT_PATH": str(audit)}
    done = subprocess.run([sys.executable, "-m", "connector.audit", "export", "--user", user], env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_documents_by_department_group_rule_and_listing(emulator, access_connector) -> None:
    app, proc, users, audit = access_connector
    ann, bob = users["ann"], users["bob"]

    # a reader of department 10 in a direct message: answered from finance/, the file cited in the card
    reader = send(emulator, app[0], QUESTION, user=ann)
    answer = card_text(emulator, reader["conversationId"])
    assert "`budget.md`" in answer.partition("**来源 / Sources**")[2], answer
    assert NOTE not in answer

    # department 20 asks the same: no passage of finance/ reached the model, nothing of it is cited
    outsider = send(emulator, app[0], QUESTION, user=bob)
    answer = card_text(emulator, outsider["conversationId"])
    assert "budget.md" not in answer and "3.2 million" not in answer and NOTE not in answer, answer

    # in a group, even the reader gets only documents open to all, and the card says something was left out
    group = send(emulator, app[0], QUESTION, user=ann, group=f"cid-{uuid.uuid4().hex[:8]}")
    answer = card_text(emulator, group["conversationId"])
    assert "budget.md" not in answer and NOTE in answer and "ask me in a direct message" in answer, answer

    # /kb lists only what the asker may read
    listing = send(emulator, app[0], "/kb", user=bob)
    text = shown_texts(emulator, listing["conversationId"], 2)[-1]  # after the answer in the same DM
    assert "public/canteen.md" in text and "finance/budget.md" not in text, text
    listing = send(emulator, app[0], "/kb", user=ann)
    text = shown_texts(emulator, listing["conversationId"], 2)[-1]  # after the answer in the same DM
    assert "public/canteen.md" in text and "finance/budget.md" in text, text

    # the departments came from the contact API, once per user (cached for directory_ttl_s)
    calls = httpx.get(emulator.url + "/sandbox/calls", params={"path": "/topapi/v2/user/get"}).json()
    asked = [c["body"]["userid"] for c in calls if c["app"] == app[0]]
    assert sorted(asked) == sorted([ann, bob]) and all(c["answer"]["errcode"] == 0 for c in calls
                                                       if c["app"] == app[0])

    # every denial is in the audit record (exported as an auditor would), with the asker's departments
    def records(user: str) -> dict[str, dict]:
        return {r["message_id"]: r for r in exported(audit, user)}

    by_bob = wait_for(lambda: (r := records(bob)) and outsider["msgId"] in r and r, timeout=30)
    assert by_bob[outsider["msgId"]]["denied"] == ["finance/budget.md"]
    assert by_bob[outsider["msgId"]]["departments"] == ["20"]
    by_ann = wait_for(lambda: (r := records(ann)) and group["msgId"] in r and r, timeout=30)
    assert by_ann[group["msgId"]]["denied"] == ["finance/budget.md"] and by_ann[group["msgId"]]["departments"] == [
        "10"]
    assert by_ann[reader["msgId"]]["denied"] == [] and "budget.md" in str(by_ann[reader["msgId"]]["cited"])
    log = proc.log()
    assert f"left out for {bob}: finance/budget.md" in log and f"left out for {ann}: finance/budget.md" in log


def test_an_app_without_the_contact_permission_still_answers_with_open_documents(
        emulator, access_connector) -> None:
    app, proc, _, _ = access_connector
    httpx.post(emulator.url + "/sandbox/apps", json={"client_id": app[0], "scopes": [
        "Card.Streaming.Write", "Card.Instance.Write", "qyapi_robot_sendmsg"]}).raise_for_status()
    newcomer = f"cat-{uuid.uuid4().hex[:6]}"
    httpx.post(emulator.url + "/sandbox/directory", json={"app": app[0], "users": {newcomer: [10]}})
    sent = send(emulator, app[0], QUESTION, user=newcomer)
    answer = card_text(emulator, sent["conversationId"])
    assert "budget.md" not in answer, answer  # no departments known: department folders stay closed
    log = proc.log()
    assert "lacks the permission qyapi_get_member" in log and f"departments of {newcomer} unknown" in log
    metrics = httpx.get(proc.url + "/metrics").text
    assert 'connector_errors_total{kind="directory"} 1.0' in metrics
