"""Finding, configuring, ordering and verifying skills; a third-party package found through its entry point."""

from __future__ import annotations

import pytest

from connector.skills.base import SkillError
from connector.skills.registry import discover, load_enabled, verify


def test_builtins_are_skills_and_on_by_default_except_the_knowledge_base() -> None:
    specs = discover()
    assert {"help", "reset", "status", "quota", "knowledge_base", "files"} <= set(specs)
    assert all(specs[n].origin == "built-in" for n in ("help", "reset", "status", "quota", "knowledge_base", "files"))
    assert [s.name for s in load_enabled({})] == ["help", "files", "reset", "status", "quota"]


def test_a_skill_on_by_default_without_its_packages_stays_off(monkeypatch, caplog) -> None:
    from connector.skills.files import FilesSkill

    monkeypatch.setattr(FilesSkill, "requires", ("surely-not-installed-package>=1.0",))
    assert "files" not in [s.name for s in load_enabled({})]  # the connector still starts
    assert "skill 'files' is on by default but surely-not-installed-package>=1.0 is not installed" in caplog.text
    with pytest.raises(SkillError, match="'files' is enabled but surely-not"):  # asked for: refuse to start
        load_enabled({"files": {"enabled": True}})


def test_third_party_skill_found_through_its_entry_point(with_glossary) -> None:
    specs = discover()
    glossary = specs["glossary"]
    assert glossary.origin == "appliance-glossary 0.1.0" and glossary.cls is not None
    assert glossary.cls.__module__ == "appliance_glossary"
    assert "cannot be loaded" in (specs["broken"].load_error or "")
    # installed is not enabled: an operator turns it on
    assert "glossary" not in [s.name for s in load_enabled({})]
    skills = load_enabled({"glossary": {"enabled": True, "terms": {"MES": "manufacturing execution system"}}})
    assert [s.name for s in skills] == ["help", "files", "reset", "status", "quota", "glossary"]
    assert skills[-1].config.terms["MES"] == "manufacturing execution system"


def test_order_is_configurable(with_glossary) -> None:
    skills = load_enabled({"glossary": {"enabled": True, "order": 5}, "help": {"order": 99}})
    assert [s.name for s in skills] == ["glossary", "files", "reset", "status", "quota", "help"]


def test_configuration_errors_name_the_table_and_key(with_glossary) -> None:
    with pytest.raises(SkillError, match=r"\[connector.plugins.glossary\]: terms"):
        load_enabled({"glossary": {"enabled": True, "terms": "not a table"}})
    with pytest.raises(SkillError, match=r"plugins.glossary\]: colour: Extra inputs"):
        load_enabled({"glossary": {"enabled": True, "colour": "red"}})
    with pytest.raises(SkillError, match="unknown skill.*nosuch"):
        load_enabled({"nosuch": {"enabled": True}})


def test_missing_dependencies_refuse_to_start_and_verify_names_them(with_glossary) -> None:
    with pytest.raises(SkillError, match="surely-not-installed-package>=1.0 is not installed"):
        load_enabled({"needs_missing": {"enabled": True}})
    with pytest.raises(SkillError, match="broken.*cannot be loaded"):
        load_enabled({"broken": {"enabled": True}})
    report = {v.name: v for v in verify({"glossary": {"enabled": True}})}
    assert report["glossary"].ok and report["glossary"].enabled
    assert report["needs_missing"].problems == ["surely-not-installed-package>=1.0 is not installed"]
    assert not report["needs_missing"].enabled
    assert report["help"].ok


def test_verify_checks_the_knowledge_base_folder(tmp_path) -> None:
    (item,) = verify({"knowledge_base": {"enabled": True, "folder": str(tmp_path / "missing")}}, ["knowledge_base"])
    assert item.problems == [f"folder {tmp_path / 'missing'} does not exist or is not a directory"]
    (item,) = verify({"knowledge_base": {"enabled": True, "folder": str(tmp_path)}}, ["knowledge_base"])
    assert item.ok, item.problems
