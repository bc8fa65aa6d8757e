"""`python -m connector.audit`: verify's exit codes and message, export's formats and filters, purge, and plain
one-line errors; settings come from the environment or the appliance.toml file like the connector's."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from connector.audit.cli import main
from connector.audit.sqlite_store import SqliteStore

from ...servers import ROOT
from .helpers import records, sql

DAY = 86400.0
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.fixture
def audit_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An audit file named in a config file (the way an operator sets it), holding 6 records a day apart."""
    path = tmp_path / "audit.sqlite3"
    config = tmp_path / "appliance.toml"
    config.write_text(f'[connector]\naudit_path = "{path}"\n')
    monkeypatch.setenv("APPLIANCE_CONFIG", str(config))
    monkeypatch.delenv("CONNECTOR_AUDIT_DSN", raising=False)
    monkeypatch.delenv("CONNECTOR_AUDIT_PATH", raising=False)
    store = SqliteStore(path)
    store.append([replace(r, ts=T0 + DAY * i, departments=("Sales", "HQ"), cited=(("doc.md", 0.5),))
                  for i, r in enumerate(records(6))])
    store.close()
    return path


def test_verify_passes_then_names_the_tampered_record(audit_file, capsys) -> None:
    assert main(["verify"]) == 0
    assert "audit chain verified: 6 records" in capsys.readouterr().out
    sql(audit_file, "UPDATE audit_records SET body = replace(body, 'question 4', 'question four') WHERE seq = 5")
    assert main(["verify"]) == 1
    err = capsys.readouterr().err
    assert "audit chain broken at record 5: content changed" in err and str(audit_file) in err


def test_export_jsonl_all_and_filtered(audit_file, capsys) -> None:
    assert main(["export"]) == 0
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert [r["seq"] for r in lines] == [1, 2, 3, 4, 5, 6] and "6 records exported" in out.err
    first = lines[0]
    assert first["question"] == "question 0" and first["departments"] == ["Sales", "HQ"]
    assert first["time"] == "2023-11-14T22:13:20.000Z" and len(first["hash"]) == 64 and "prev_hash" in first

    assert main(["export", "--user", "u2"]) == 0
    assert [json.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()] == [2, 4, 6]
    assert main(["export", "--since", "2023-11-16", "--until", "2023-11-18T00:00:00"]) == 0
    assert [json.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()] == [3, 4]
    assert main(["export", "--since", "2023-11-16T06:00:00+08:00", "--user", "u1"]) == 0  # 2023-11-15T22:00Z
    assert [json.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()] == [3, 5]


def test_export_csv_to_a_file(audit_file, tmp_path, capsys) -> None:
    target = tmp_path / "out.csv"
    assert main(["export", "--format", "csv", "--output", str(target), "--user", "u1"]) == 0
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert [r["seq"] for r in rows] == ["1", "3", "5"]
    assert rows[0]["departments"] == "Sales; HQ" and rows[0]["cited"] == "doc.md (0.500)"
    assert rows[0]["answer"] == "answer 0" and rows[0]["outcome"] == "answered"


def test_purge_keeps_the_chain_verifiable_and_export_skips_the_anchor(audit_file, capsys) -> None:
    assert main(["purge", "--older-than-days", "0"]) == 0
    assert "6 records older than 0 days purged" in capsys.readouterr().out
    assert main(["verify"]) == 0
    assert "verified: 1 record (record 7)" in capsys.readouterr().out
    assert main(["export"]) == 0
    assert capsys.readouterr().out == ""  # only the anchor is left; it is no message


def test_bad_input_is_one_plain_line(audit_file, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", "--since", "last tuesday"])
    assert exc.value.code == 2 and "is not a date" in capsys.readouterr().err
    assert main(["export", "--since", "2024-01-02", "--until", "2024-01-01"]) == 2
    assert "--since must be before --until" in capsys.readouterr().err


def test_unreachable_postgres_is_one_line_without_the_password(monkeypatch, capsys) -> None:
    monkeypatch.setenv("CONNECTOR_AUDIT_DSN", "postgresql://auditor:s3cret-pw@127.0.0.1:1/audit")
    assert main(["verify"]) == 2
    err = capsys.readouterr().err
    assert "PostgreSQL 127.0.0.1:1/audit" in err and "s3cret-pw" not in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["verify", "export", "purge"])
def test_every_command_has_help(command: str) -> None:
    run = subprocess.run([sys.executable, "-m", "connector.audit", command, "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0 and "usage: python -m connector.audit " + command in run.stdout
