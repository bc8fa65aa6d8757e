"""Access rules of the knowledge base (`_access.toml`): inheritance, the open/closed default, users, departments,
admins, malformed files."""

from __future__ import annotations

import logging
from pathlib import Path

from connector.skills.knowledge_base.access import (
    ACCESS_FILE,
    AccessPolicy,
    Rule,
    parse,
)


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_users_departments_and_admins() -> None:
    rule = parse('users = ["ann"]\ndepartments = [10, "20"]\nadmins = ["it-lead"]', "finance/_access.toml")
    assert rule == Rule("finance/_access.toml", users=frozenset({"ann"}), departments=frozenset({"10", "20"}),
                        admins=frozenset({"it-lead"}))
    assert rule.allows("ann", ())
    assert rule.allows("it-lead", ())
    assert rule.allows("bob", ("30", "20"))  # any one of the asker's departments
    assert rule.allows("bob", (10,))  # ids compare as text, whether the directory gives numbers or strings
    assert not rule.allows("bob", ("30",))
    assert not rule.allows("bob", ())
    assert not rule.open


def test_open_true_is_everyone_and_an_empty_file_is_nobody() -> None:
    assert parse("open = true", "x").allows("anyone", ())
    empty = parse("", "x")
    assert not empty.allows("anyone", ("10",)) and not empty.broken


def test_the_nearest_file_wins_up_to_the_root(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        ACCESS_FILE: "departments = [1]",
        "finance/_access.toml": "departments = [10]",
        "finance/payroll/_access.toml": 'users = ["cfo"]',
        "finance/public/_access.toml": "open = true",
        ".hidden/_access.toml": "open = true",
    })
    policy = AccessPolicy.load(root)
    assert policy.rule_for("handbook.md").source == ACCESS_FILE
    assert policy.rule_for("hr/leave.md").source == ACCESS_FILE  # no file of its own: the root's
    assert policy.rule_for("finance/budget.md").source == "finance/_access.toml"
    assert policy.rule_for("finance/q1/report.pdf").source == "finance/_access.toml"
    assert policy.rule_for("finance/payroll/2024/jan.docx").source == "finance/payroll/_access.toml"
    # not merged: the payroll file is the whole rule, so finance's department 10 does not reach it
    assert not policy.readable("finance/payroll/jan.docx", "ann", ("10",))
    assert policy.readable("finance/payroll/jan.docx", "cfo", ())
    assert policy.readable("finance/budget.md", "ann", ("10",)) and not policy.readable("finance/budget.md", "ann",
                                                                                          ("1",))
    assert policy.open_to_all("finance/public/prices.md") and not policy.open_to_all("finance/budget.md")
    assert ".hidden" not in policy.rules


def test_without_a_file_the_setting_decides(tmp_path: Path) -> None:
    root = tree(tmp_path, {"a/doc.md": "x", "b/_access.toml": 'users = ["ann"]'})
    opened = AccessPolicy.load(root, open_without_access_file=True)
    assert opened.readable("a/doc.md", "bob", ()) and opened.open_to_all("a/doc.md") and opened.restricts
    closed = AccessPolicy.load(root, open_without_access_file=False)
    assert not closed.readable("a/doc.md", "bob", ("1",)) and not closed.open_to_all("a/doc.md")
    assert closed.readable("b/doc.md", "ann", ())
    assert not AccessPolicy.load(tmp_path / "a").restricts  # no file, open default: nothing to filter


def test_a_malformed_file_closes_its_folder_and_names_itself(tmp_path: Path, caplog) -> None:
    root = tree(tmp_path, {
        ACCESS_FILE: "open = true",
        "legal/_access.toml": 'users = ["ann"\n',  # not TOML
        "hr/_access.toml": 'users = "ann"\nteams = [1]',  # TOML, but not an access file
    })
    with caplog.at_level(logging.ERROR, logger="connector.skills.knowledge_base"):
        policy = AccessPolicy.load(root)
    for folder in ("legal", "hr"):
        rule = policy.rule_for(f"{folder}/sub/doc.md")
        assert rule.broken and not rule.allows("ann", ()) and not policy.open_to_all(f"{folder}/doc.md")
    assert policy.readable("other.md", "anyone", ())
    assert "legal/_access.toml is not valid TOML" in caplog.text
    assert "hr/_access.toml is not a valid access file" in caplog.text
    assert "users: Input should be a valid list" in caplog.text and "teams: Extra inputs" in caplog.text


def test_an_unreadable_file_closes_its_folder(tmp_path: Path, caplog) -> None:
    root = tree(tmp_path, {"ops/doc.md": "x"})
    (root / "ops" / ACCESS_FILE).write_bytes(b"\xff\xfe not utf-8")
    with caplog.at_level(logging.ERROR, logger="connector.skills.knowledge_base"):
        policy = AccessPolicy.load(root)
    assert policy.rule_for("ops/doc.md").broken and "ops/_access.toml cannot be read" in caplog.text
