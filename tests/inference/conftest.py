"""Fixtures shared by the inference tests that talk to the real server through the official client."""

from __future__ import annotations

import openai
import pytest

from ..servers import ServerProcess


@pytest.fixture(scope="module")
def client(inference: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=inference.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id
