"""The hash chain: how stored records are linked, and the check that finds the first record that is not as written.

Each stored row holds its sequence number, the previous record's hash, its body (the canonical JSON of the
record, with that sequence number and previous hash inside) and its own hash, SHA-256 of the body. A chain-head
row keeps the last sequence number and hash, so a record removed from the end is noticed too. After a purge
the chain starts at the record after the purged ones; the newest anchor record says which one that is and the
hash it must follow.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .records import GENESIS, AuditRecord, canonical, sha256


@dataclass(frozen=True, slots=True)
class StoredRow:
    seq: int
    ts: float
    kind: str
    sender_id: str
    outcome: str
    prev_hash: str
    hash: str
    body: str

    def record(self) -> AuditRecord:
        return AuditRecord.from_fields(json.loads(self.body))

    def fields(self) -> dict:
        """The record's fields with its place in the chain (seq, prev_hash, hash): what an export shows."""
        data = json.loads(self.body)
        data["hash"] = self.hash
        return data


def link(records: Sequence[AuditRecord], head_seq: int, head_hash: str) -> list[StoredRow]:
    """The rows that append `records` after the chain head (seq, hash)."""
    rows = []
    for record in records:
        head_seq += 1
        body = canonical({**record.fields(), "seq": head_seq, "prev_hash": head_hash})
        row = StoredRow(head_seq, record.ts, record.kind, record.sender_id, record.outcome, head_hash, sha256(body),
                        body)
        rows.append(row)
        head_hash = row.hash
    return rows


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    records: int  # rows checked
    first_seq: int = 0
    last_seq: int = 0
    bad_seq: int | None = None  # the first record that is not as written
    problem: str = ""

    def __str__(self) -> str:
        if self.ok:
            span = f" (records {self.first_seq} to {self.last_seq})" if self.records > 1 else (f" (record {self.first_seq})" if self.records else "")
            return f"audit chain verified: {self.records} record{'' if self.records == 1 else 's'}{span}"
        return f"audit chain broken at record {self.bad_seq}: {self.problem}"


def _bad(checked: int, first: int, seq: int, problem: str) -> Verdict:
    return Verdict(False, checked, first, seq, seq, problem)


def verify(rows: Iterable[StoredRow], head: tuple[int, str], last_anchor: StoredRow | None) -> Verdict:
    """Check `rows` (in sequence order) against each other, the chain head and the newest anchor."""
    head_seq, head_hash = head
    expected_seq, expected_prev = 1, GENESIS
    if last_anchor is not None:
        try:
            anchor = json.loads(last_anchor.body)
            expected_seq, expected_prev = int(anchor["purged_through"]) + 1, str(anchor["purged_last_hash"])
        except (ValueError, KeyError, TypeError):
            return _bad(0, 0, last_anchor.seq, "anchor record is not readable (changed)")
    checked, first = 0, 0
    for row in rows:
        first = first or row.seq
        if sha256(row.body) != row.hash:
            return _bad(checked, first, row.seq, "content changed (its hash does not match its content)")
        try:
            body = json.loads(row.body)
            body_seq, body_prev = int(body["seq"]), str(body["prev_hash"])
        except (ValueError, KeyError, TypeError):
            return _bad(checked, first, row.seq, "content is not a readable record (changed)")
        if body_seq != row.seq:
            return _bad(checked, first, row.seq, f"holds the content of record {body_seq} (records reordered, "
                                                 "or one inserted before it)")
        if row.seq > expected_seq:
            gap = str(expected_seq) if row.seq == expected_seq + 1 else f"{expected_seq} to {row.seq - 1}"
            return _bad(checked, first, row.seq, f"record {gap} before it is missing (deleted)")
        if body_prev != expected_prev or row.prev_hash != body_prev:
            return _bad(checked, first, row.seq, "does not follow the record before it (a record before it was "
                                                 "changed, inserted, deleted or reordered)")
        columns = {"ts": row.ts, "kind": row.kind, "sender_id": row.sender_id, "outcome": row.outcome}
        changed = [name for name, value in columns.items() if body.get(name) != value]
        if changed:
            return _bad(checked, first, row.seq, f"column {', '.join(changed)} changed (differs from its content)")
        checked += 1
        expected_seq, expected_prev = row.seq + 1, row.hash
    last = expected_seq - 1
    if head_seq > last:
        gap = str(head_seq) if head_seq == last + 1 else f"{last + 1} to {head_seq}"
        return _bad(checked, first, last + 1, f"record {gap} at the end is missing (deleted; the chain head is "
                                              f"record {head_seq})")
    if head_seq < last:
        return _bad(checked, first, head_seq + 1, f"is beyond the chain head (record {head_seq}): inserted")
    if checked and head_hash != expected_prev:
        return _bad(checked, first, last, "does not match the chain head's hash (changed)")
    return Verdict(True, checked, first, last)
