"""`python -m connector.audit {verify,export,purge}`: the auditors' and operators' commands.

They read the connector's own settings (CONNECTOR_AUDIT_DSN or audit_path, the appliance.toml file), so they
look at the same store the connector writes. `verify` exits 0 when the whole chain is as written and 1 naming
the first record that is not; `export` writes JSON lines or CSV; `purge` removes old records and leaves an
anchor so the rest still verifies. Any problem is one plain line on stderr (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TextIO

from ..settings import ConnectorSettings, settings_or_exit
from .backend import describe, open_store
from .store import SqlStore

CSV_COLUMNS = ("seq", "time", "platform", "conversation_id", "conversation_kind", "sender_id", "sender_name",
               "departments", "message_id", "content", "question", "answer", "model", "prompt_tokens",
               "completion_tokens", "latency_ms", "delivery", "outcome", "reason", "skill", "cited", "denied",
               "prev_hash", "hash")


class UsageError(Exception):
    pass


def moment(text: str) -> float:
    """ISO 8601 date or date and time; without a zone it is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD) or ISO 8601 time") from None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m connector.audit",
                                  description="The connector's hash-chained audit trail (README: Compliance). "
                                              "Reads the connector's settings: CONNECTOR_AUDIT_DSN (PostgreSQL) "
                                              "or audit_path (SQLite), and appliance.toml.")
    sub = top.add_subparsers(dest="command", required=True, metavar="{verify,export,purge}")
    sub.add_parser("verify", help="check the whole chain; exit 1 naming the first record that is not as written",
                   description="Check every record's hash and its link to the one before; exit 0 when the chain "
                               "is intact, 1 naming the first changed, deleted, inserted or reordered record.")
    export = sub.add_parser("export", help="records as JSON lines or CSV, for auditors",
                            description="Write the message records (oldest first) as JSON lines or CSV.")
    export.add_argument("--since", type=moment, help="from this date/time on (ISO 8601, UTC unless a zone is given)")
    export.add_argument("--until", type=moment, help="before this date/time (a bare date: before that day starts)")
    export.add_argument("--user", help="only this sender (staff id)")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    purge = sub.add_parser("purge", help="remove old records, keeping the rest verifiable (anchor record)",
                           description="Remove the records older than N days; an anchor record takes their "
                                       "place in the chain so `verify` still passes.")
    purge.add_argument("--older-than-days", type=int, required=True, metavar="N")
    return top


def csv_row(fields: dict) -> list:
    def cell(name: str) -> object:
        value = fields.get(name, "")
        if name == "cited":
            return "; ".join(f"{c['source']} ({c['score']:.3f})" for c in value)
        if isinstance(value, list):
            return "; ".join(str(v) for v in value)
        return value

    return [cell(name) for name in CSV_COLUMNS]


def export(store: SqlStore, out: TextIO, fmt: str, since: float | None, until: float | None,
           user: str | None) -> int:
    count = 0
    writer = csv.writer(out) if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    for row in store.rows(since=since, until=until, user=user, kind="message"):
        fields = row.fields()
        if writer is not None:
            writer.writerow(csv_row(fields))
        else:
            out.write(json.dumps(fields, ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    return count


def run(args: argparse.Namespace, settings: ConnectorSettings) -> int:
    store = open_store(settings)
    where = describe(settings)
    try:
        if args.command == "verify":
            verdict = store.verify()
            print(f"{verdict} ({where})", file=sys.stdout if verdict.ok else sys.stderr)
            return 0 if verdict.ok else 1
        if args.command == "export":
            if args.since is not None and args.until is not None and args.since >= args.until:
                raise UsageError("--since must be before --until")
            out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout  # noqa: SIM115
            try:
                count = export(store, out, args.format, args.since, args.until, args.user)
            finally:
                if out is not sys.stdout:
                    out.close()
            print(f"{count} records exported from {where}", file=sys.stderr)
            return 0
        if args.older_than_days < 0:
            raise UsageError("--older-than-days must be 0 or more")
        cutoff = datetime.now(UTC) - timedelta(days=args.older_than_days)
        removed = store.purge(cutoff.timestamp())
        print(f"{removed} records older than {args.older_than_days} days purged from {where}"
              + (" (an anchor record keeps the rest verifiable)" if removed else ""))
        return 0
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = settings_or_exit("connector.audit")
    except SystemExit as exc:
        return int(exc.code or 2)
    try:
        return run(args, settings)
    except UsageError as exc:
        print(f"connector.audit: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"connector.audit: {exc.strerror or exc} ({getattr(exc, 'filename', None) or describe(settings)})",
              file=sys.stderr)
        return 2
    except Exception as exc:  # the database: unreachable, wrong password, not an audit store...
        print(f"connector.audit: the audit store ({describe(settings)}) cannot be used: {type(exc).__name__}: "
              f"{_first_line(exc, settings)}", file=sys.stderr)
        return 2


def _first_line(exc: Exception, settings: ConnectorSettings) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    for secret in settings.secrets():
        text = text.replace(secret, "***")
    return text
