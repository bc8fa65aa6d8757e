"""The audit writer: submit never waits; a full queue or a failing store spills to the file; the spill file is
replayed into the chain at start and when the store is back (a real PostgreSQL stopped, then started); stop
flushes; the retention period purges."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from connector.audit.postgres_store import PostgresStore
from connector.audit.records import Recorder
from connector.audit.sqlite_store import SqliteStore
from connector.audit.writer import AuditWriter, SpillFile

from ..sandbox.helpers import wait_for
from .helpers import records, trail


def writer_for(store, tmp_path: Path, counts: Counter, **options) -> AuditWriter:
    options.setdefault("queue_size", 100)
    return AuditWriter(store, Recorder(), spill_path=tmp_path / "spill" / "audit-spill.jsonl",
                       on_result=lambda result, n: counts.update({result: n}),
                       on_failure=lambda: counts.update({"failure": 1}), **options)


def test_records_are_written_and_stop_flushes(tmp_path) -> None:
    counts: Counter = Counter()
    store = SqliteStore(tmp_path / "audit.sqlite3")
    writer = writer_for(store, tmp_path, counts)
    writer.start()
    for i in range(50):
        writer.submit(trail(f"question {i}"))
    writer.stop()
    check = SqliteStore(tmp_path / "audit.sqlite3")
    assert check.verify().ok and check.verify().records == 50 and counts == {"written": 50}
    assert [r.record().question for r in check.rows()] == [f"question {i}" for i in range(50)]


class StuckStore(SqliteStore):
    """A store whose appends hang until released (a seam: the database is slow)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.release = threading.Event()

    def append(self, records):
        self.release.wait(30)
        return super().append(records)


def test_submit_never_waits_and_a_full_queue_spills(tmp_path) -> None:
    counts: Counter = Counter()
    store = StuckStore(tmp_path / "audit.sqlite3")
    writer = writer_for(store, tmp_path, counts, queue_size=10)
    writer.start()
    started = time.perf_counter()
    for i in range(100):
        writer.submit(trail(f"q{i}"))
    took = time.perf_counter() - started
    assert took < 1.0, took  # the store is stuck, the caller is not
    assert counts["spilled"] >= 80
    spilled = [json.loads(line)["question"] for line in writer.spill.path.read_text().splitlines()]
    assert spilled and spilled == sorted(spilled, key=lambda q: int(q[1:]))
    store.release.set()
    writer.stop()
    assert counts["written"] + counts["replayed"] == 100 and counts["spilled"] == counts["replayed"]
    check = SqliteStore(tmp_path / "audit.sqlite3")
    assert check.verify().ok and sorted(r.record().question for r in check.rows()) == sorted(f"q{i}" for i in
                                                                                               range(100))
    assert not SpillFile(writer.spill.path).pending()


def test_spill_file_is_replayed_at_start(tmp_path) -> None:
    spill = SpillFile(tmp_path / "spill" / "audit-spill.jsonl")
    spill.add(records(3))
    counts: Counter = Counter()
    writer = writer_for(SqliteStore(tmp_path / "audit.sqlite3"), tmp_path, counts)
    writer.start()
    writer.stop()
    assert counts == {"replayed": 3} and not spill.pending()
    check = SqliteStore(tmp_path / "audit.sqlite3")
    assert [r.record().question for r in check.rows()] == ["question 0", "question 1", "question 2"]


def test_a_bad_spill_line_is_set_aside(tmp_path) -> None:
    spill = SpillFile(tmp_path / "audit-spill.jsonl")
    spill.add(records(1))
    with spill.path.open("a") as out:
        out.write("{not json\n")
    spill.add(records(1))
    assert len(spill.take()) == 2
    assert (tmp_path / "audit-spill.jsonl.bad").read_text() == "{not json\n"


def test_retention_purges_old_records_at_start(tmp_path) -> None:
    store = SqliteStore(tmp_path / "audit.sqlite3")
    old = time.time() - 3 * 86400
    store.append(records(4, start_ts=old))  # 3 days ago, an hour apart
    store.append(records(2, start_ts=time.time() - 3600))
    store.close()
    counts: Counter = Counter()
    writer = writer_for(SqliteStore(tmp_path / "audit.sqlite3"), tmp_path, counts, retention_days=1)
    writer.start()
    writer.submit(trail())
    writer.stop()
    check = SqliteStore(tmp_path / "audit.sqlite3")
    assert check.verify().ok
    assert sorted(r.kind for r in check.rows()) == ["anchor", "message", "message", "message"]


@pytest.mark.slow  # starts a PostgreSQL server
def test_database_outage_spills_and_replays_when_it_is_back(own_postgres, tmp_path) -> None:
    own_postgres.start()
    dsn = own_postgres.new_database()
    own_postgres.halt()  # the database is down when the connector starts
    counts: Counter = Counter()
    writer = writer_for(PostgresStore(dsn), tmp_path, counts, retry_s=0.3)
    writer.start()
    for i in range(5):
        writer.submit(trail(f"during the outage {i}"))
    wait_for(lambda: counts["spilled"] == 5, timeout=30)
    assert counts["failure"] >= 1 and counts["written"] == 0 and writer.down
    assert writer.status() == {"store": "postgresql", "state": "down", "queued": 0, "spilled": True}  # /health
    own_postgres.start()
    wait_for(lambda: counts["replayed"] == 5, timeout=30)
    for i in range(3):
        writer.submit(trail(f"after {i}"))
    wait_for(lambda: counts["written"] == 3, timeout=30)
    assert not writer.down and not writer.spill.pending()
    assert writer.status() == {"store": "postgresql", "state": "up", "queued": 0, "spilled": False}
    # down again while running: the next ones spill, then go into the chain after the earlier ones
    own_postgres.halt()
    writer.submit(trail("second outage"))
    wait_for(lambda: counts["spilled"] == 6, timeout=30)
    own_postgres.start()
    writer.stop()  # the spill is replayed before the writer stops, or at the next start
    store = PostgresStore(dsn)
    if SpillFile(writer.spill.path).pending():
        restarted = writer_for(PostgresStore(dsn), tmp_path, counts)
        restarted.start()
        restarted.stop()
    verdict = store.verify()
    questions = [r.record().question for r in store.rows()]
    assert verdict.ok and questions == [*(f"during the outage {i}" for i in range(5)),
                                        *(f"after {i}" for i in range(3)), "second outage"]
    store.close()
