"""The embedded model in a TransformersEngine, started and closed around a block (engine-level tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from inference.settings import InferenceSettings

from ..conftest import DEFAULT_MODEL


@contextmanager
def running_engine(**settings) -> Iterator:
    from inference.engines.transformers_engine import TransformersEngine

    if not DEFAULT_MODEL.exists():
        pytest.fail("embedded model missing")
    eng = TransformersEngine(InferenceSettings(**settings))
    asyncio.run(eng.start())
    try:
        yield eng
    finally:
        asyncio.run(eng.close())
