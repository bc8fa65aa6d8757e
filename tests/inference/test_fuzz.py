"""Fuzz the inference API from its own OpenAPI schema (schemathesis): no 5xx, every error in the envelope.

Runs the real app (routes, middleware, validation, serving layer) in-process with the fake engine at
the seam: generation speed is not under test here, and fuzzed max_tokens would make real generation
take hours. Malformed inputs against the real server are in test_malformed.py.
"""

from __future__ import annotations

import json

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from inference.app import create_app  # noqa: E402
from inference.settings import InferenceSettings  # noqa: E402

from .fakes import FakeEngine  # noqa: E402

CASES: dict[str, int] = {"total": 0, "5xx": 0}


class _OpenEngine(FakeEngine):
    async def close(self) -> None:  # the client runs lifespan shutdowns between calls; keep serving
        pass


def _app():
    app = create_app(InferenceSettings(served_model_name="fake-model", warmup=False, max_num_seqs=4,
                                       max_waiting=4, api_key=None), _OpenEngine(max_model_len=4096))
    app.state.server_state.ready = True
    app.state.engine.started = True
    return app


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_openai_envelope(case) -> None:
    response = case.call()
    CASES["total"] += 1
    if response.status_code >= 500:
        CASES["5xx"] += 1
    assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        body = json.loads(response.text)
        assert set(body["error"]) == {"message", "type", "param", "code"}, body


def test_report_fuzz_counts() -> None:
    print(f"\nfuzz: {CASES['total']} cases, {CASES['5xx']} server errors")
    assert CASES["5xx"] == 0
