"""The CPU int8 mode for real (INFERENCE_QUANTIZATION=int8): the server on the embedded model answers
factual questions at temperature 0 as the float32 server does, and says int8 in /version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import _require_model
from ..servers import ServerProcess, inference_server

pytestmark = pytest.mark.slow

QUESTIONS = [("What is the capital of France?", "paris"), ("What is the capital of Japan?", "tokyo"),
             ("What is the capital of Germany?", "berlin")]


@pytest.fixture(scope="module")
def int8_server(log_dir: Path) -> Iterator[ServerProcess]:
    _require_model()
    server = inference_server("inference-int8", engine="transformers", device="cpu", quantization="int8",
                              max_num_seqs=4, max_model_len=1024)
    server.start(log_dir).wait_ready()
    try:
        yield server
    finally:
        server.stop()


def ask(server: ServerProcess, question: str, max_tokens: int = 24) -> str:
    reply = httpx.post(server.url + "/v1/chat/completions", timeout=120, json={
        "messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": max_tokens})
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["message"]["content"]


def test_version_says_int8_on_the_cpu(int8_server: ServerProcess) -> None:
    version = httpx.get(int8_server.url + "/version", timeout=10).json()
    assert version["engine"] == "transformers" and version["device"] == "cpu"
    assert version["quantization"] == "int8" and version["dtype"] == "float32"
    assert "torch._int_mm" in version["dtype_reason"]


def test_factual_answers_are_right(int8_server: ServerProcess) -> None:
    right = [expected in ask(int8_server, question).lower() for question, expected in QUESTIONS]
    assert sum(right) >= 2, right


def test_first_words_match_float32(int8_server: ServerProcess, inference: ServerProcess) -> None:
    """Greedy text starts as the float32 server's (the session's server on the same model)."""
    question = QUESTIONS[0][0]
    ours, reference = ask(int8_server, question, 8).split()[:4], ask(inference, question, 8).split()[:4]
    assert ours == reference


def test_batched_requests_answer_too(int8_server: ServerProcess) -> None:
    """Several sequences in one decode step take the per-token torch._int_mm path, not the single-row one."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda q: ask(int8_server, q[0]), QUESTIONS))
    assert sum(expected in text.lower() for text, (_, expected) in zip(answers, QUESTIONS)) >= 2, answers
