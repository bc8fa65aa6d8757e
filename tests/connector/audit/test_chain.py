"""The hash chain on the SQLite store: intact chains verify; a changed, deleted, inserted or reordered record is
found and named; a purge leaves an anchor and the rest still verifies; the head stops a cut-off tail."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest

from connector.audit.chain import link
from connector.audit.records import GENESIS, canonical, sha256
from connector.audit.sqlite_store import SqliteStore

from .helpers import records, sql


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit.sqlite3"


@pytest.fixture
def store(path: Path):
    store = SqliteStore(path)
    store.append(records(6))
    yield store
    store.close()


def test_intact_chain_verifies_and_links(store, path) -> None:
    verdict = store.verify()
    assert verdict.ok and verdict.records == 6 and (verdict.first_seq, verdict.last_seq) == (1, 6)
    rows = list(store.rows())
    assert rows[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in pairwise(rows))
    for row in rows:  # each hash is SHA-256 of the canonical body, which holds its own seq and prev hash
        body = json.loads(row.body)
        assert row.hash == sha256(row.body) and canonical(body) == row.body
        assert body["seq"] == row.seq and body["prev_hash"] == row.prev_hash
    assert store.head() == (6, rows[-1].hash)


def test_empty_store_verifies(tmp_path) -> None:
    store = SqliteStore(tmp_path / "new" / "audit.sqlite3")
    assert store.verify().ok and store.verify().records == 0


def test_changed_record_is_named(store, path) -> None:
    sql(path, "UPDATE audit_records SET body = replace(body, 'answer 3', 'answer X') WHERE seq = 4")
    verdict = store.verify()
    assert not verdict.ok and verdict.bad_seq == 4 and "content changed" in verdict.problem
    assert str(verdict).startswith("audit chain broken at record 4")


def test_changed_record_with_recomputed_hash_breaks_the_next_link(store, path) -> None:
    body = json.loads(sql(path, "SELECT body FROM audit_records WHERE seq = 3")[0][0])
    body["answer"] = "forged"
    forged = canonical(body)
    sql(path, "UPDATE audit_records SET body = ?, hash = ? WHERE seq = 3", forged, sha256(forged))
    verdict = store.verify()
    assert verdict.bad_seq == 4 and "does not follow" in verdict.problem


def test_changed_index_column_is_named(store, path) -> None:
    sql(path, "UPDATE audit_records SET sender_id = 'someone' WHERE seq = 2")
    verdict = store.verify()
    assert verdict.bad_seq == 2 and "sender_id" in verdict.problem


def test_deleted_record_is_named(store, path) -> None:
    sql(path, "DELETE FROM audit_records WHERE seq = 3")
    verdict = store.verify()
    assert verdict.bad_seq == 4 and "record 3 before it is missing" in verdict.problem


def test_deleted_last_record_is_found_by_the_head(store, path) -> None:
    sql(path, "DELETE FROM audit_records WHERE seq = 6")
    verdict = store.verify()
    assert verdict.bad_seq == 6 and "at the end is missing" in verdict.problem


def test_deleted_first_record_is_named(store, path) -> None:
    sql(path, "DELETE FROM audit_records WHERE seq = 1")
    assert store.verify().bad_seq == 2


def test_inserted_record_is_found(store, path) -> None:
    # make room after record 2 and put a well-formed record there, linked to record 2
    sql(path, "UPDATE audit_records SET seq = seq + 100 WHERE seq >= 3")
    sql(path, "UPDATE audit_records SET seq = seq - 99 WHERE seq >= 103")
    seq2_hash = sql(path, "SELECT hash FROM audit_records WHERE seq = 2")[0][0]
    row = link(records(1, users=("intruder",)), 2, seq2_hash)[0]
    sql(path, "INSERT INTO audit_records VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row.seq, row.ts, row.kind, row.sender_id,
        row.outcome, row.prev_hash, row.hash, row.body)
    verdict = store.verify()
    assert verdict.bad_seq == 4 and "holds the content of record 3" in verdict.problem


def test_appended_record_beyond_the_head_is_found(store, path) -> None:
    last = list(store.rows())[-1]
    row = link(records(1), last.seq, last.hash)[0]
    sql(path, "INSERT INTO audit_records VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row.seq, row.ts, row.kind, row.sender_id,
        row.outcome, row.prev_hash, row.hash, row.body)
    verdict = store.verify()
    assert verdict.bad_seq == 7 and "beyond the chain head" in verdict.problem


def test_reordered_records_are_named(store, path) -> None:
    sql(path, "UPDATE audit_records SET seq = -seq WHERE seq IN (3, 4)")
    sql(path, "UPDATE audit_records SET seq = 4 WHERE seq = -3")
    sql(path, "UPDATE audit_records SET seq = 3 WHERE seq = -4")
    verdict = store.verify()
    assert verdict.bad_seq == 3 and "holds the content of record 4" in verdict.problem


def test_purge_leaves_an_anchor_and_the_chain_verifies(store, path) -> None:
    rows = list(store.rows())
    removed = store.purge(rows[3].ts)  # records 1-3 are older
    assert removed == 3
    left = list(store.rows())
    assert [r.seq for r in left] == [4, 5, 6, 7] and left[-1].kind == "anchor"
    anchor = json.loads(left[-1].body)
    assert anchor["purged_through"] == 3 and anchor["purged_last_hash"] == rows[2].hash == left[0].prev_hash
    assert anchor["purged_count"] == 3 and left[-1].prev_hash == rows[-1].hash
    verdict = store.verify()
    assert verdict.ok and (verdict.first_seq, verdict.last_seq) == (4, 7)
    store.append(records(2, start_ts=1_800_000_000.0))
    assert store.verify().ok
    # a second purge takes the first anchor with it; the newest anchor is the one that counts
    assert store.purge(1_800_000_000.0) == 4  # records 4-6 and the anchor 7
    assert store.verify().ok and [r.kind for r in store.rows()] == ["message", "message", "anchor"]
    # and tampering after a purge is still found
    sql(path, "DELETE FROM audit_records WHERE seq = 8")
    assert store.verify().bad_seq == 9


def test_purge_of_everything_keeps_only_the_anchor(store) -> None:
    assert store.purge(2_000_000_000.0) == 6
    assert [r.kind for r in store.rows()] == ["anchor"] and store.verify().ok
    assert store.purge(2_000_000_000.0) == 1  # the old anchor goes, a new one stays
    assert store.verify().ok and store.purge(0.0) == 0


def test_records_removed_before_the_anchor_are_found(store, path) -> None:
    store.purge(list(store.rows())[2].ts)  # keeps 3..6 and the anchor 7
    sql(path, "DELETE FROM audit_records WHERE seq = 3")
    verdict = store.verify()
    assert verdict.bad_seq == 4 and "record 3 before it is missing" in verdict.problem


def test_two_stores_on_one_file_keep_one_chain(path) -> None:
    first, second = SqliteStore(path), SqliteStore(path)
    for i in range(5):
        first.append(records(2, start_ts=1e9 + i))
        second.append(records(3, start_ts=2e9 + i))
    assert first.verify().ok and first.verify().records == 25
