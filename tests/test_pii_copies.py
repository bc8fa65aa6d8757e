"""The personal-data masking module exists twice (connector/core/pii.py, inference/pii.py: the connector
imports nothing of inference, nor inference of the connector): the code below their docstrings stays equal."""

from __future__ import annotations

from pathlib import Path

from .servers import ROOT


def test_the_two_copies_stay_equal() -> None:
    def code(path: Path) -> str:
        text = path.read_text()
        return text[text.index('"""', 3) + 3:]

    assert code(ROOT / "connector" / "core" / "pii.py") == code(ROOT / "inference" / "pii.py")
