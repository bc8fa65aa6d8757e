"""The audit trail end to end: real connector processes, the emulator over real sockets, the real inference
server, the SQLite file and a real PostgreSQL. An answered message gives a record with the question, answer,
tokens, delivery and outcome; rate-limited and too-long messages give theirs; tampering with a stored row makes
`python -m connector.audit verify` fail naming it; two replicas of one app write one unbroken chain."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from connector.audit.chain import StoredRow
from connector.audit.postgres_store import PostgresStore
from connector.audit.sqlite_store import SqliteStore

from ...servers import ROOT, ServerProcess, scrape
from ..conftest import connector_process, start_connector
from ..helpers import finalized, shown_texts
from ..sandbox.helpers import live_connections, new_app, send, wait_for

pytestmark = pytest.mark.slow


def verify_cli(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_AUDIT")}
    return subprocess.run([sys.executable, "-m", "connector.audit", "verify"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**clean, **env}, check=False)


def records_of(store, count: int) -> list[StoredRow]:
    return wait_for(lambda: (rows := list(store.rows())) and len(rows) >= count and rows, timeout=30)


def check_answered(row: StoredRow, card: dict, question: str, user: str) -> None:
    record = row.record()
    assert record.question == question and record.sender_id == user and record.platform == "dingtalk"
    assert record.outcome == "answered" and record.delivery == "card" and record.conversation_kind == "dm"
    assert record.answer.strip() and record.answer.strip()[:20] in card["texts"]["msgContent"]
    assert record.prompt_tokens > 10 and 0 < record.completion_tokens <= 24
    assert record.model == "SmolLM2-135M-Instruct" and record.latency_ms > 0 and record.message_id


def test_sqlite_audit_records_and_a_tampered_row(emulator, inference: ServerProcess, log_dir: Path,
                                                 tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    client_id, secret = new_app(emulator)
    connector = start_connector(connector_process(
        "connector-audit-sqlite", emulator=emulator, client_id=client_id, secret=secret,
        model_url=inference.url + "/v1", audit_path=path, user_rate_limit=1, max_message_chars=60),
        log_dir, emulator, client_id)
    try:
        sent = send(emulator, client_id, "What is the capital of France?", user="alice")
        card = finalized(emulator, sent["conversationId"], 1)[0]
        store = SqliteStore(path)
        check_answered(records_of(store, 1)[0], card, "What is the capital of France?", "alice")
        send(emulator, client_id, "And of Spain?", user="alice")  # over alice's limit of 1 a minute
        shown_texts(emulator, sent["conversationId"], 2)
        long = "Please tell me everything about " + "the history of Europe " * 5
        bob = send(emulator, client_id, long, user="bob")
        shown_texts(emulator, bob["conversationId"], 1)
        rows = [r.record() for r in records_of(store, 3)]
        assert [(r.sender_id, r.outcome, r.reason) for r in rows[1:]] == [("alice", "rate_limited", "too_fast"),
                                                                          ("bob", "refused", "too_long")]
        assert rows[1].question == "And of Spain?" and rows[1].completion_tokens == 0 and rows[2].question == long
        assert store.verify().ok
        store.close()
        assert scrape(connector.url)['connector_audit_records_total{result="written"}'] == 3
    finally:
        connector.stop()
    run = verify_cli(CONNECTOR_AUDIT_PATH=str(path))
    assert run.returncode == 0 and "audit chain verified: 3 records" in run.stdout, run.stdout + run.stderr
    with sqlite3.connect(path) as conn:  # someone with the file in hand rewrites the answer
        conn.execute("UPDATE audit_records SET body = replace(body, '\"outcome\":\"rate_limited\"', "
                     "'\"outcome\":\"answered\"') WHERE seq = 2")
    run = verify_cli(CONNECTOR_AUDIT_PATH=str(path))
    assert run.returncode == 1 and "audit chain broken at record 2: content changed" in run.stderr, run.stderr


def test_postgres_audit_and_a_tampered_row(emulator, inference: ServerProcess, log_dir: Path, pg_dsn: str) -> None:
    client_id, secret = new_app(emulator)
    connector = start_connector(connector_process(
        "connector-audit-pg", emulator=emulator, client_id=client_id, secret=secret,
        model_url=inference.url + "/v1", audit_dsn=pg_dsn), log_dir, emulator, client_id)
    try:
        sent = send(emulator, client_id, "Name a colour.", user="carol")
        card = finalized(emulator, sent["conversationId"], 1)[0]
        store = PostgresStore(pg_dsn)
        check_answered(records_of(store, 1)[0], card, "Name a colour.", "carol")
        store.close()
    finally:
        connector.stop()
    assert verify_cli(CONNECTOR_AUDIT_DSN=pg_dsn).returncode == 0
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE audit_records SET body = replace(body, '\"carol\"', '\"mallory\"') WHERE seq = 1")
    run = verify_cli(CONNECTOR_AUDIT_DSN=pg_dsn)
    assert run.returncode == 1 and "audit chain broken at record 1" in run.stderr, run.stderr


def test_two_replicas_write_one_chain(emulator, inference: ServerProcess, log_dir: Path, pg_dsn: str) -> None:
    client_id, secret = new_app(emulator)
    replicas: list[ServerProcess] = []
    try:
        for n in range(2):
            replicas.append(connector_process(f"connector-audit-replica{n}", emulator=emulator, client_id=client_id,
                                              secret=secret, model_url=inference.url + "/v1", audit_dsn=pg_dsn))
            replicas[-1].start(log_dir)
        wait_for(lambda: len(live_connections(emulator, client_id)) == 2, timeout=60)
        for replica in replicas:
            replica.wait_ready(timeout=60)
        conversations = [send(emulator, client_id, f"Say the number {i}.", user=f"user{i}")["conversationId"]
                         for i in range(12)]  # each goes to one of the two connections, chosen at random
        for conversation in conversations:
            finalized(emulator, conversation, 1, timeout=120)
        store = PostgresStore(pg_dsn)
        rows = records_of(store, 12)
        assert store.verify().ok and len(rows) == 12
        assert sorted(r.sender_id for r in rows) == sorted(f"user{i}" for i in range(12))
        written = [scrape(r.url)['connector_audit_records_total{result="written"}'] for r in replicas]
        assert sum(written) == 12 and all(written), written  # both replicas wrote into the one chain
        store.close()
    finally:
        for replica in replicas:
            replica.stop()
    assert verify_cli(CONNECTOR_AUDIT_DSN=pg_dsn).returncode == 0
