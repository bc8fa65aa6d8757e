"""Where audit records are kept: the SQL both stores share (SQLite by default, PostgreSQL for replicas).

Appending reads the chain head, links the new records after it and inserts them, all inside one transaction
that holds the head locked (SQLite: BEGIN IMMEDIATE; PostgreSQL: SELECT ... FOR UPDATE on the head row), so
writers in several processes or replicas never fork the chain. Purging removes the oldest records and appends
an anchor record, in the same kind of transaction, so the rest still verifies. Reading pages by sequence
number, so a chain of millions of records never sits in memory. backend.py picks the store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, suppress
from typing import Any

from .chain import StoredRow, Verdict, link, verify
from .records import GENESIS, AuditRecord, anchor

COLUMNS = "seq, ts, kind, sender_id, outcome, prev_hash, hash, body"
PAGE = 1000


class StoreError(Exception):
    """The audit store cannot be opened or used; worded for the operator (never holds the DSN)."""


class SqlStore:
    """The statements and the chain logic; subclasses connect and open the locked transaction."""

    ph = "?"  # the driver's placeholder
    name = "sql"
    real = "REAL"
    bigint = "INTEGER"

    def __init__(self) -> None:
        self._conn: Any = None

    # ---- what a subclass provides ------------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def _locked(self, conn: Any) -> AbstractContextManager[Any]:
        """A transaction that holds the chain head; yields a cursor."""
        raise NotImplementedError

    def _schema_lock(self, cur: Any) -> None:
        """Keep concurrent first starts from creating the tables twice."""

    # ---- connection ----------------------------------------------------------------------------------
    def connection(self) -> Any:
        if self._conn is None:
            conn = self._connect()
            try:
                self._create_schema(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                conn.close()

    def _create_schema(self, conn: Any) -> None:
        with self._locked_schema(conn) as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS audit_records (seq {self.bigint} PRIMARY KEY, "
                        f"ts {self.real} NOT NULL, kind TEXT NOT NULL, sender_id TEXT NOT NULL, "
                        "outcome TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL, body TEXT NOT NULL)")
            cur.execute("CREATE INDEX IF NOT EXISTS audit_records_ts ON audit_records (ts)")
            cur.execute("CREATE INDEX IF NOT EXISTS audit_records_sender ON audit_records (sender_id, ts)")
            cur.execute("CREATE INDEX IF NOT EXISTS audit_records_kind ON audit_records (kind, seq)")
            cur.execute(f"CREATE TABLE IF NOT EXISTS audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), "
                        f"seq {self.bigint} NOT NULL, hash TEXT NOT NULL)")
            cur.execute(f"INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, {self.ph}) ON CONFLICT (id) DO NOTHING",
                        (GENESIS,))

    def _locked_schema(self, conn: Any) -> AbstractContextManager[Any]:
        return self._locked(conn)

    # ---- writing -------------------------------------------------------------------------------------
    def _head(self, cur: Any) -> tuple[int, str]:
        cur.execute("SELECT seq, hash FROM audit_head WHERE id = 1" + self._for_update())
        seq, hash_ = cur.fetchone()
        return int(seq), str(hash_)

    def _for_update(self) -> str:
        return ""

    def _insert(self, cur: Any, rows: Sequence[StoredRow]) -> None:
        p = self.ph
        cur.executemany(f"INSERT INTO audit_records ({COLUMNS}) VALUES ({', '.join([p] * 8)})",
                        [(r.seq, r.ts, r.kind, r.sender_id, r.outcome, r.prev_hash, r.hash, r.body) for r in rows])
        cur.execute(f"UPDATE audit_head SET seq = {p}, hash = {p} WHERE id = 1", (rows[-1].seq, rows[-1].hash))

    def append(self, records: Sequence[AuditRecord]) -> list[StoredRow]:
        """Link `records` after the chain head and store them, atomically."""
        if not records:
            return []
        with self._locked(self.connection()) as cur:
            rows = link(records, *self._head(cur))
            self._insert(cur, rows)
        return rows

    def purge(self, older_than_ts: float) -> int:
        """Remove the oldest records, up to the first one not older than `older_than_ts`, and append an anchor
        record naming the last one removed and its hash. Returns how many were removed."""
        p = self.ph
        with self._locked(self.connection()) as cur:
            head_seq, head_hash = self._head(cur)
            cur.execute(f"SELECT MIN(seq) FROM audit_records WHERE ts >= {p}", (older_than_ts,))
            keep_from = cur.fetchone()[0]
            through = head_seq if keep_from is None else int(keep_from) - 1
            cur.execute(f"SELECT hash FROM audit_records WHERE seq = {p}", (through,))
            found = cur.fetchone()
            if found is None:
                return 0  # nothing older, or already purged
            cur.execute(f"SELECT COUNT(*) FROM audit_records WHERE seq <= {p}", (through,))
            count = int(cur.fetchone()[0])
            cur.execute(f"DELETE FROM audit_records WHERE seq <= {p}", (through,))
            rows = link([anchor(time.time(), through, str(found[0]), count)], head_seq, head_hash)
            self._insert(cur, rows)
        return count

    # ---- reading -------------------------------------------------------------------------------------
    def head(self) -> tuple[int, str]:
        cur = self.connection().cursor()
        try:
            cur.execute("SELECT seq, hash FROM audit_head WHERE id = 1")
            seq, hash_ = cur.fetchone()
        finally:
            self._end_read(cur)
        return int(seq), str(hash_)

    def _end_read(self, cur: Any) -> None:
        cur.close()

    def rows(self, since: float | None = None, until: float | None = None, user: str | None = None,
             kind: str | None = None) -> Iterator[StoredRow]:
        """Stored rows in sequence order, optionally those with since <= ts < until, of one sender or kind."""
        where, args = [f"seq > {self.ph}"], []
        for clause, value in (("ts >= {}", since), ("ts < {}", until), ("sender_id = {}", user), ("kind = {}", kind)):
            if value is not None:
                where.append(clause.format(self.ph))
                args.append(value)
        sql = f"SELECT {COLUMNS} FROM audit_records WHERE {' AND '.join(where)} ORDER BY seq LIMIT {PAGE}"
        last = -1
        while True:
            cur = self.connection().cursor()
            try:
                cur.execute(sql, (last, *args))
                page = [StoredRow(int(r[0]), float(r[1]), *r[2:]) for r in cur.fetchall()]
            finally:
                self._end_read(cur)
            yield from page
            if len(page) < PAGE:
                return
            last = page[-1].seq

    def last_anchor(self) -> StoredRow | None:
        return next(reversed_rows(self, "anchor"), None)

    def verify(self) -> Verdict:
        return verify(self.rows(), self.head(), self.last_anchor())


def reversed_rows(store: SqlStore, kind: str) -> Iterator[StoredRow]:
    cur = store.connection().cursor()
    try:
        cur.execute(f"SELECT {COLUMNS} FROM audit_records WHERE kind = {store.ph} ORDER BY seq DESC LIMIT 1", (kind,))
        found = cur.fetchall()
    finally:
        store._end_read(cur)
    return iter([StoredRow(int(r[0]), float(r[1]), *r[2:]) for r in found])

