"""`python -m connector.skills`: list, enable / disable (the config file edited in place), verify, index."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from connector.skills.knowledge_base import SAMPLES

ROOT = Path(__file__).resolve().parents[3]


def cli(*args: str, config: Path | None = None, site: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env["APPLIANCE_CONFIG"] = str(config) if config else ""
    if not config:
        env.pop("APPLIANCE_CONFIG")
    if site:
        env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-m", "connector.skills", *args], capture_output=True, text=True,
                          env=env, cwd=config.parent if config else ROOT, timeout=120)


def test_list_enable_disable_keep_the_operators_file(tmp_path: Path, glossary_site: Path) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text('# our appliance\n[connector]\nclient_id = "dingabc"  # the AppKey\n', encoding="utf-8")
    listed = json.loads(cli("list", "--json", config=config, site=glossary_site).stdout)
    by_name = {row["name"]: row for row in listed}
    assert by_name["glossary"]["origin"] == "appliance-glossary 0.1.0" and not by_name["glossary"]["enabled"]
    assert by_name["help"]["enabled"] and by_name["help"]["origin"] == "built-in"

    run = cli("enable", "glossary", config=config, site=glossary_site)
    assert run.returncode == 0 and "restart the connector" in run.stdout
    text = config.read_text(encoding="utf-8")
    assert text.startswith('# our appliance\n[connector]\nclient_id = "dingabc"  # the AppKey\n')
    assert tomllib.loads(text)["connector"]["plugins"]["glossary"] == {"enabled": True}
    assert re.search(r"^glossary\s+enabled", cli("list", config=config, site=glossary_site).stdout, re.M)

    assert cli("disable", "help", config=config, site=glossary_site).returncode == 0
    plugins = tomllib.loads(config.read_text(encoding="utf-8"))["connector"]["plugins"]
    assert plugins == {"glossary": {"enabled": True}, "help": {"enabled": False}}
    assert cli("enable", "nosuch", config=config).returncode == 2


def test_verify_reports_problems_with_an_exit_code(tmp_path: Path, glossary_site: Path) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text("[connector.plugins.needs_missing]\nenabled = true\n", encoding="utf-8")
    run = cli("verify", config=config, site=glossary_site)
    assert run.returncode == 1
    assert "FAIL     needs_missing (appliance-glossary 0.1.0, enabled)" in run.stdout
    assert "surely-not-installed-package>=1.0 is not installed" in run.stdout
    assert "warn     broken" in run.stdout and "ok       glossary" in run.stdout
    config.write_text("[connector.plugins.glossary]\nenabled = true\nterms = {MES = 'x'}\n", encoding="utf-8")
    assert cli("verify", config=config, site=glossary_site).returncode == 0
    assert cli("verify", "broken", config=config, site=glossary_site).returncode == 1


def test_index_embeds_only_changes_and_shows_what_a_question_finds(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES, docs)
    config = tmp_path / "appliance.toml"
    config.write_text(f'[connector.plugins.knowledge_base]\nfolder = "{docs}"\nindex_dir = "{tmp_path / "ix"}"\n',
                      encoding="utf-8")
    first = cli("index", "--query", "出差住宿每晚的报销上限是多少？", config=config)
    assert first.returncode == 0, first.stderr
    assert "4 added, 0 updated, 0 removed, 0 unchanged, 0 failed" in first.stdout
    assert "华东工厂差旅报销制度.docx" in first.stdout.split("chunks\n", 1)[1]
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 nope")
    second = cli("index", config=config)
    assert second.returncode == 1  # a document could not be read: said, and the exit code says it too
    assert "0 added, 0 updated, 0 removed, 4 unchanged, 1 failed; 0 chunks embedded" in second.stdout
    assert "failed: broken.pdf" in second.stdout


def test_the_example_config_file_is_valid() -> None:
    from connector.skills.registry import load_enabled

    data = tomllib.loads((ROOT / "deploy" / "appliance.toml.example").read_text(encoding="utf-8"))
    assert [s.name for s in load_enabled(data["connector"]["plugins"])] == ["help", "files", "reset", "status",
                                                                               "quota"]
