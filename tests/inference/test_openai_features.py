"""response_format, tools, logprobs, finish_reason, /tokenize and /detokenize: the real server on the embedded
model through the official openai client (its structured-output helper included). Runs on both engines
(`make test-vllm` runs it on the vLLM engine too)."""

from __future__ import annotations

import json
import math

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from ..servers import ServerProcess

pytestmark = pytest.mark.slow

OPENAI_FINISH = {"stop", "length", "tool_calls", "content_filter", "function_call"}
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


class City(BaseModel):
    """Bounded fields: a 135M model can otherwise run one string to max_tokens (the grammar enforces them)."""

    name: str = Field(max_length=30)
    country: str = Field(max_length=30)
    population: int = Field(ge=0, le=100_000_000)


def _ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_json_object_returns_a_json_object(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(model=model, temperature=0, max_tokens=120,
                                           messages=_ask("Describe a cat as JSON with its name and age."),
                                           response_format={"type": "json_object"})
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(json.loads(choice.message.content), dict)


def test_json_schema_with_the_clients_parse_helper(client: openai.OpenAI, model: str) -> None:
    parsed = client.chat.completions.parse(model=model, temperature=0, max_tokens=120, response_format=City,
                                           messages=_ask("Describe Paris as JSON with name, country and population."))
    city = parsed.choices[0].message.parsed
    assert isinstance(city, City) and city.name and city.country
    assert parsed.choices[0].finish_reason == "stop"


def test_json_schema_streams_valid_json(client: openai.OpenAI, model: str) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
              "required": ["answer"], "additionalProperties": False}
    chunks = list(client.chat.completions.create(
        model=model, temperature=0.7, seed=3, max_tokens=40, stream=True, messages=_ask("Is the sky blue?"),
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text)["answer"] in ("yes", "no")
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_schema_that_cannot_be_used_is_400(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=_ask("hi"), max_tokens=5, response_format={
            "type": "json_schema", "json_schema": {"name": "bad", "schema": {"type": "no-such-type"}}})
    assert caught.value.body["param"] == "response_format"
    assert "schema" in caught.value.body["message"]


def test_tools_on_a_template_without_tools_are_400_not_dropped(client: openai.OpenAI, model: str) -> None:
    """SmolLM2's chat template never renders tools: the request is refused with the reason, on both engines."""
    for choice in ("auto", "required", {"type": "function", "function": {"name": "get_weather"}}):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=model, messages=_ask("Weather in Paris?"), tools=WEATHER,
                                           tool_choice=choice, max_tokens=20)
        assert caught.value.body["param"] == "tools"
        assert "chat template does not support tools" in caught.value.body["message"]
    # tool_choice "none": nothing can be called, so the tools are not needed and not refused
    reply = client.chat.completions.create(model=model, messages=_ask("Hi"), tools=WEATHER, tool_choice="none",
                                           max_tokens=5)
    assert reply.choices[0].message.tool_calls in (None, [])


def test_chat_logprobs_and_top_logprobs(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(model=model, messages=_ask("Say hello."), temperature=0, max_tokens=8,
                                           logprobs=True, top_logprobs=3)
    choice = reply.choices[0]
    tokens = choice.logprobs.content
    assert len(tokens) == reply.usage.completion_tokens
    assert "".join(t.token for t in tokens).strip() == choice.message.content.strip()
    for t in tokens:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)
        assert t.top_logprobs[0].token == t.token  # greedy: the chosen token is the most likely
        assert math.isclose(t.top_logprobs[0].logprob, t.logprob, abs_tol=1e-3)
        assert bytes(t.bytes).decode("utf-8") == t.token
    plain = client.chat.completions.create(model=model, messages=_ask("Say hello."), temperature=0, max_tokens=8)
    assert plain.choices[0].logprobs is None
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model, messages=_ask("hi"), max_tokens=2, top_logprobs=2)


def test_streamed_logprobs_match_the_text(client: openai.OpenAI, model: str) -> None:
    chunks = list(client.chat.completions.create(model=model, messages=_ask("Say hello."), temperature=0,
                                                 max_tokens=8, logprobs=True, stream=True))
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert len(tokens) == 8 or chunks[-1].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "".join(t.token for t in tokens).strip() == text.strip()


def test_completion_logprobs(client: openai.OpenAI, model: str) -> None:
    reply = client.completions.create(model=model, prompt="The capital of France is", temperature=0, max_tokens=4,
                                      logprobs=2)
    lp = reply.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 4
    assert "".join(lp.tokens) == reply.choices[0].text
    assert lp.text_offset[0] == 0 and all(len(top) == 2 for top in lp.top_logprobs)
    assert all(lp.tokens[i] in lp.top_logprobs[i] for i in range(4))


def test_finish_reasons_are_openais(client: openai.OpenAI, model: str) -> None:
    short = client.chat.completions.create(model=model, messages=_ask("Tell me a story."), max_tokens=3)
    assert short.choices[0].finish_reason == "length"
    full = client.chat.completions.create(model=model, messages=_ask("Say OK."), temperature=0, max_tokens=60)
    assert full.choices[0].finish_reason in OPENAI_FINISH


def test_tokenize_returns_tokens_and_detokenize_inverts_it(inference: ServerProcess, model: str) -> None:
    text = "Hello world, 你好"
    got = httpx.post(inference.url + "/tokenize", json={"model": model, "prompt": text,
                                                        "return_token_strs": True}).json()
    assert got["count"] == len(got["tokens"]) == len(got["token_strs"]) > 0
    assert got["max_model_len"] == 2048
    back = httpx.post(inference.url + "/detokenize", json={"model": model, "tokens": got["tokens"]})
    assert back.status_code == 200 and back.json()["prompt"] == text
    chat = httpx.post(inference.url + "/tokenize", json={"messages": _ask("hi")}).json()
    assert chat["tokens"] and chat.get("token_strs") is None
    bad = httpx.post(inference.url + "/detokenize", json={"tokens": [10**9]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"
