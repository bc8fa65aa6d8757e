"""The example third-party skill package, really built and installed (into a folder of its own)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent / "glossary_skill"


@pytest.fixture(scope="session")
def glossary_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site folder holding the installed package and its dist-info (with the entry points)."""
    target = tmp_path_factory.mktemp("glossary-site")
    build = tmp_path_factory.mktemp("glossary-build")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), str(PACKAGE)],
                   check=True, cwd=build, capture_output=True)
    assert list(target.glob("appliance_glossary-0.1.0.dist-info/entry_points.txt"))
    return target


@pytest.fixture
def with_glossary(glossary_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(glossary_site))
    yield glossary_site
    for name in [m for m in sys.modules if m.startswith("appliance_glossary")]:
        del sys.modules[name]
