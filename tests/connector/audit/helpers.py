"""Shared bits of the audit tests: trails and records to write, and raw access to a SQLite audit file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from connector.audit.records import AuditRecord
from connector.core.trail import Cited, Trail
from connector.types import IncomingMessage


def message(text: str = "What is the budget?", sender: str = "staff1", **fields) -> IncomingMessage:
    values = {"platform": "dingtalk", "message_id": "msg1", "delivery_id": "d1", "conversation_id": "cid1",
              "conversation_kind": "dm", "sender_id": sender, "sender_name": "Alice", "text": text,
              "msgtype": "text", **fields}
    return IncomingMessage(**values)


def trail(text: str = "What is the budget?", answer: str = "It is 5 million.", **fields) -> Trail:
    done = Trail(message(text, **fields))
    done.departments = ("Finance", "Board")
    done.answer, done.skill = answer, "kb"
    done.add_usage("SmolLM2", 12, 7)
    done.delivery = "card"
    done.cited = [Cited("finance/budget.md (p. 2)", 0.8125)]
    done.denied = ["hr/salaries.md"]
    done.finished_mono = done.started_mono + 1.25
    return done


def records(count: int, start_ts: float = 1_700_000_000.0, users: tuple[str, ...] = ("u1", "u2")) -> list[AuditRecord]:
    return [AuditRecord(ts=start_ts + 3600 * i, sender_id=users[i % len(users)], message_id=f"m{i}",
                        question=f"question {i}", answer=f"answer {i}", outcome="answered") for i in range(count)]


def sql(path: Path, statement: str, *args) -> list[tuple]:
    """Run one statement on the audit file, as someone with the file in hand would (no audit code)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(statement, args).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()
