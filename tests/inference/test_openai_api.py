"""The real server on the real embedded model, through the official openai client."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import TEST_API_KEY, TEST_JWT_SECRET
from ..servers import TEST_ENGINE, ServerProcess, metric, scrape
from .test_vllm_metric_names import vllm_series

pytestmark = pytest.mark.slow

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def test_list_models(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == ["SmolLM2-135M-Instruct"]
    assert models[0].model_extra["max_model_len"] == 2048


def test_chat_non_stream_answers_with_chat_template(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(model=model, messages=FRANCE, temperature=0, max_tokens=30)
    choice = reply.choices[0]
    assert "Paris" in choice.message.content
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert reply.object == "chat.completion"
    assert reply.usage.prompt_tokens > 10
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_content_as_text_parts_and_system_prompt(inference: ServerProcess, client: openai.OpenAI,
                                                 model: str) -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "What is the capital "},
                                          {"type": "text", "text": "of France?"}]}]
    as_parts = client.chat.completions.create(model=model, temperature=0, max_tokens=30, messages=parts)
    as_string = client.chat.completions.create(model=model, temperature=0, max_tokens=30, messages=FRANCE)
    assert as_parts.choices[0].message.content == as_string.choices[0].message.content
    assert "Paris" in as_parts.choices[0].message.content
    # a system message replaces the template's default one ("You are a helpful AI assistant named SmolLM...")
    system = [{"role": "system", "content": "Answer in one word."}, *FRANCE]
    default_count = httpx.post(inference.url + "/tokenize", json={"messages": FRANCE}).json()["count"]
    system_count = httpx.post(inference.url + "/tokenize", json={"messages": system}).json()["count"]
    assert system_count < default_count
    reply = client.chat.completions.create(model=model, temperature=0, max_tokens=30, messages=system)
    assert reply.usage.prompt_tokens == system_count


def test_chat_stream_chunks_follow_openai_format(client: openai.OpenAI, model: str) -> None:
    chunks = list(client.chat.completions.create(model=model, messages=FRANCE, temperature=0, max_tokens=30,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert all(c.usage is None for c in chunks)


def test_stream_include_usage(client: openai.OpenAI, model: str) -> None:
    chunks = list(client.chat.completions.create(model=model, messages=FRANCE, temperature=0, max_tokens=5,
                                                 stream=True, stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.completion_tokens == 5
    assert last.usage.prompt_tokens > 0
    assert chunks[-2].choices[0].finish_reason == "length"


def test_stop_text_is_not_emitted(client: openai.OpenAI, model: str) -> None:
    plain = client.chat.completions.create(model=model, messages=FRANCE, temperature=0, max_tokens=30)
    assert "Paris" in plain.choices[0].message.content
    stopped = client.chat.completions.create(model=model, messages=FRANCE, temperature=0, max_tokens=30,
                                             stop=["Paris"])
    content = stopped.choices[0].message.content
    assert "Paris" not in content
    assert plain.choices[0].message.content.startswith(content)
    assert stopped.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model=model, messages=FRANCE, temperature=0, max_tokens=30,
                                              stop="Paris", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == content


def test_max_tokens_one(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(model=model, messages=FRANCE, max_tokens=1)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 1
    reply = client.chat.completions.create(model=model, messages=FRANCE, max_completion_tokens=1)
    assert reply.usage.completion_tokens == 1


def test_seed_gives_the_same_output(client: openai.OpenAI, model: str) -> None:
    def run(seed: int) -> str:
        messages = [{"role": "user", "content": "Tell me a short story about a robot."}]
        return client.chat.completions.create(model=model, messages=messages, temperature=1.0, seed=seed,
                                              max_tokens=24).choices[0].message.content

    first, second = run(1234), run(1234)
    assert first == second
    others = {run(s) for s in (1, 2, 3)}
    assert len(others | {first}) > 1, "different seeds should not all give the same sample"


def test_n_two_choices(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(model=model, messages=FRANCE, n=2, max_tokens=8, seed=7)
    assert sorted(c.index for c in reply.choices) == [0, 1]
    assert all(c.message.content for c in reply.choices)
    assert reply.usage.completion_tokens == 16 or all(c.finish_reason == "stop" for c in reply.choices)
    streamed = client.chat.completions.create(model=model, messages=FRANCE, n=2, max_tokens=4, stream=True)
    finished = {c.choices[0].index for c in streamed if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}


def test_penalties_and_top_k_top_p_accepted(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(model=model, messages=FRANCE, max_tokens=16, temperature=0.8,
                                           top_p=0.9, presence_penalty=0.5, frequency_penalty=0.5, seed=3,
                                           extra_body={"top_k": 20}, user="tester")
    assert reply.choices[0].message.content


def test_text_completions(client: openai.OpenAI, model: str) -> None:
    reply = client.completions.create(model=model, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert reply.object == "text_completion"
    assert reply.choices[0].text
    assert reply.usage.completion_tokens <= 6
    streamed = list(client.completions.create(model=model, prompt="The capital of France is", max_tokens=6,
                                              temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == reply.choices[0].text
    batch = client.completions.create(model=model, prompt=["One, two,", "A, B,"], max_tokens=3, temperature=0)
    assert sorted(c.index for c in batch.choices) == [0, 1]


def test_tokenize_counts_like_usage(inference: ServerProcess, client: openai.OpenAI, model: str) -> None:
    counted = httpx.post(inference.url + "/tokenize", json={"model": model, "messages": FRANCE}).json()
    reply = client.chat.completions.create(model=model, messages=FRANCE, max_tokens=1)
    assert counted["count"] == reply.usage.prompt_tokens
    assert counted["max_model_len"] == 2048
    prompt = httpx.post(inference.url + "/tokenize", json={"prompt": "hello world", "return_tokens": True}).json()
    assert prompt["count"] == len(prompt["tokens"]) > 0


def test_operational_endpoints(inference: ServerProcess) -> None:
    assert httpx.get(inference.url + "/health").json() == {"status": "ok"}
    assert httpx.get(inference.url + "/ready").status_code == 200
    version = httpx.get(inference.url + "/version").json()
    assert version["engine"] == TEST_ENGINE and version["model"] == "SmolLM2-135M-Instruct"
    assert version["version"]
    metrics = httpx.get(inference.url + "/metrics").text
    for name in ("llm_requests_total", "llm_engine_info"):
        assert name in metrics, name


def test_vllm_series_on_both_engines(inference: ServerProcess, client: openai.OpenAI, model: str) -> None:
    """vLLM's names (tests/inference/vllm_metric_names.txt) on both engines, each once, labelled with the
    served model; on the vLLM engine they are vLLM's own (KV-cache usage, preemptions, queue time)."""
    client.chat.completions.create(model=model, messages=FRANCE, max_tokens=4)
    text = httpx.get(inference.url + "/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, series in vllm_series().items():
        if series.engines == "both" or TEST_ENGINE == "vllm":
            assert name in families, name
            assert len(re.findall(rf"^# TYPE {re.escape(name)}(_total)? ", text, re.MULTILINE)) == 1, name
            assert families[name].type == series.type, name
            assert {s.labels["model_name"] for s in families[name].samples} == {model}, name
    samples = scrape(inference.url)
    assert metric(samples, "vllm:request_success_total", finished_reason="length") >= 1
    assert metric(samples, "vllm:time_to_first_token_seconds_count") >= 1
    assert metric(samples, "vllm:prompt_tokens_total") > 0 and metric(samples, "vllm:generation_tokens_total") > 0
    if TEST_ENGINE == "vllm":
        assert 0 <= metric(samples, "vllm:kv_cache_usage_perc") <= 1


def test_eight_concurrent_streams_share_decode_steps(inference: ServerProcess, model: str) -> None:
    before = scrape(inference.url)

    async def run() -> list[tuple[str, int]]:
        client = openai.AsyncOpenAI(base_url=inference.url + "/v1", api_key="unused", max_retries=0)

        async def one(i: int) -> tuple[str, int]:
            stream = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": f"Count to {i + 5}."}], max_tokens=24,
                stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
            reason, tokens = "", 0
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].finish_reason:
                    reason = chunk.choices[0].finish_reason
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
            return reason, tokens

        try:
            return await asyncio.gather(*(one(i) for i in range(8)))
        finally:
            await client.close()

    started = time.monotonic()
    results = asyncio.run(run())
    elapsed = time.monotonic() - started
    assert results == [("length", 24)] * 8
    after = scrape(inference.url)
    if TEST_ENGINE != "transformers":  # vLLM schedules its own batches: no per-step statistics to read
        assert elapsed < 8 * 24 / 15, "eight streams should share decode steps"
        return
    steps = after["llm_engine_steps_total"] - before["llm_engine_steps_total"]
    carried = after["llm_engine_step_sequences_total"] - before["llm_engine_step_sequences_total"]
    assert after["llm_engine_max_batch_size"] >= 4
    # 8 x 24 tokens in far fewer steps than 8 x 23 one-sequence steps: steps carried several sequences
    assert carried / steps > 3, (carried, steps)
    assert steps < 8 * 23 / 2


def test_stream_disconnect_stops_generation(inference: ServerProcess, model: str) -> None:
    before = scrape(inference.url)
    body = {"model": model, "messages": FRANCE, "max_tokens": 1500, "stream": True, "ignore_eos": True}
    with httpx.Client(timeout=60) as http, http.stream("POST", inference.url + "/v1/chat/completions",
                                                      json=body) as response:
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data:"):
                seen += 1
            if seen >= 4:
                break
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = scrape(inference.url)
        if after["llm_engine_aborted_total"] > before["llm_engine_aborted_total"] and \
                metric(after, "vllm:num_requests_running") == 0:
            break
        time.sleep(0.1)
    assert after["llm_engine_aborted_total"] == before["llm_engine_aborted_total"] + 1
    assert metric(after, "vllm:num_requests_running") == 0
    generated = metric(after, "vllm:generation_tokens_total") - metric(before, "vllm:generation_tokens_total")
    assert generated < 200, generated


def test_non_stream_disconnect_stops_generation(inference: ServerProcess, model: str) -> None:
    before = scrape(inference.url)
    body = {"model": model, "messages": FRANCE, "max_tokens": 1500, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(inference.url + "/v1/chat/completions", json=body, timeout=1.5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = scrape(inference.url)
        if after["llm_engine_aborted_total"] > before["llm_engine_aborted_total"]:
            break
        time.sleep(0.1)
    assert after["llm_engine_aborted_total"] == before["llm_engine_aborted_total"] + 1
    assert metric(after, "vllm:generation_tokens_total") - metric(before, "vllm:generation_tokens_total") < 200


# ---- errors, every one in the OpenAI envelope -------------------------------------------------


def _envelope(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


def test_malformed_json_is_400(inference: ServerProcess) -> None:
    response = httpx.post(inference.url + "/v1/chat/completions", content=b'{"messages": [',
                          headers={"content-type": "application/json"})
    assert _envelope(response, 400)["type"] == "invalid_request_error"
    response = httpx.post(inference.url + "/v1/chat/completions", content=b"\xff\xfe not utf-8",
                          headers={"content-type": "application/json"})
    _envelope(response, 400)


def test_schema_violations_are_400(client: openai.OpenAI, model: str, inference: ServerProcess) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=FRANCE, temperature=5)
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == "temperature"
    for bad in ({"messages": [{"role": "wizard", "content": "hi"}]}, {"messages": "hi"}, {"messages": []},
                {"messages": FRANCE, "n": 0}, {"messages": FRANCE, "max_tokens": "many"}, {},
                {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}):
        _envelope(httpx.post(inference.url + "/v1/chat/completions", json=bad), 400)


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4", messages=FRANCE)
    assert caught.value.body["code"] == "model_not_found"


def test_body_too_large_is_413(inference: ServerProcess) -> None:
    huge = {"messages": [{"role": "user", "content": "x" * (2 << 20)}]}
    error = _envelope(httpx.post(inference.url + "/v1/chat/completions", json=huge), 413)
    assert error["code"] == "payload_too_large"


def test_prompt_longer_than_context_is_400(client: openai.OpenAI, model: str) -> None:
    long_text = "hello " * 2100
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": long_text}])
    assert caught.value.body["code"] == "context_length_exceeded"
    assert "2048" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=FRANCE, max_tokens=5000)
    assert caught.value.body["code"] == "context_length_exceeded"


def test_unknown_route_and_method(inference: ServerProcess) -> None:
    _envelope(httpx.get(inference.url + "/v1/nothing"), 404)
    _envelope(httpx.get(inference.url + "/v1/chat/completions"), 405)


# ---- the small server: one slot, no queue, an API key --------------------------------------------


def test_full_server_answers_429_at_once(small_inference: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {TEST_API_KEY}"}
    body = {"messages": FRANCE, "max_tokens": 200, "stream": True, "ignore_eos": True}
    with httpx.Client(timeout=60, headers=headers) as http, \
            http.stream("POST", small_inference.url + "/v1/chat/completions", json=body) as running:
        lines = running.iter_lines()  # keep a reference: a dropped iterator closes the stream
        assert next(lines).startswith("data:")
        client = openai.OpenAI(base_url=small_inference.url + "/v1", api_key=TEST_API_KEY, max_retries=0)
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=FRANCE, max_tokens=4)
        assert time.monotonic() - started < 1.0
        assert caught.value.response.headers["retry-after"] == "1"
        assert caught.value.body["type"] == "rate_limit_error"
    metrics = scrape(small_inference.url)
    assert metrics['llm_requests_total{endpoint="/v1/chat/completions",status="429"}'] >= 1


def test_api_key_required_on_v1_only(small_inference: ServerProcess) -> None:
    url = small_inference.url
    assert _envelope(httpx.get(url + "/v1/models"), 401)["type"] == "authentication_error"
    _envelope(httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
    _envelope(httpx.post(url + "/tokenize", json={"prompt": "x"}), 401)
    assert httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {TEST_API_KEY}"}).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0).models.list()
    for open_path in ("/health", "/ready", "/metrics"):
        assert httpx.get(url + open_path).status_code == 200


def test_short_lived_tokens_with_the_official_client(small_inference: ServerProcess) -> None:
    """`python -m inference.tokens issue` mints what the server accepts; an expired or forged one is a 401
    that says why, and the token never reaches the log."""
    import subprocess
    import sys

    from inference.auth import issue_token

    env = {"INFERENCE_JWT_SECRET": TEST_JWT_SECRET, "PATH": "/usr/bin:/bin"}
    token = subprocess.run([sys.executable, "-m", "inference.tokens", "issue", "--sub", "tester", "--ttl", "300"],
                           capture_output=True, text=True, check=True, env=env).stdout.strip()
    client = openai.OpenAI(base_url=small_inference.url + "/v1", api_key=token, max_retries=0)
    assert [m.id for m in client.models.list().data]
    expired = issue_token(TEST_JWT_SECRET, subject="tester", ttl_s=60, now=time.time() - 600)
    with pytest.raises(openai.AuthenticationError, match="expired"):
        openai.OpenAI(base_url=small_inference.url + "/v1", api_key=expired, max_retries=0).models.list()
    forged = issue_token("not-the-servers-secret-0123456789", subject="admin", ttl_s=60)
    with pytest.raises(openai.AuthenticationError, match="signature"):
        openai.OpenAI(base_url=small_inference.url + "/v1", api_key=forged, max_retries=0).models.list()
    metrics = scrape(small_inference.url)
    assert metrics['llm_requests_by_principal_total{principal="jwt:tester"}'] >= 1
    assert metrics['llm_auth_failures_total{reason="expired"}'] >= 1
    assert token not in small_inference.log() and expired not in small_inference.log()


def test_api_key_never_logged(small_inference: ServerProcess) -> None:
    httpx.get(small_inference.url + "/v1/models", headers={"Authorization": f"Bearer {TEST_API_KEY}"})
    assert TEST_API_KEY not in small_inference.log()
    assert small_inference.log(), "the server log should not be empty"


def test_chat_json_roundtrip_keeps_unicode(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(model=model, max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": "你好，请介绍一下你自己。"}])
    assert reply.choices[0].message.content
    json.dumps(reply.model_dump())
