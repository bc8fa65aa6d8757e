"""Fixtures of the in-process DingTalk tests: a fresh emulator app, an HTTP client, faults cleared afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from ..sandbox.helpers import new_app
from .helpers import clear_faults


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def app(emulator) -> tuple[str, str]:
    """A fresh app with every permission: (client id, secret)."""
    return new_app(emulator)


@pytest.fixture
def faults(emulator) -> Iterator[None]:
    """The emulator's faults apply to every app: none is left for the next test."""
    clear_faults(emulator)
    yield
    clear_faults(emulator)
