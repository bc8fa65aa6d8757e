"""response_format / tools / tool_choice planning, tool-call parsing, chat templates with tools, logprobs shapes and
the generation_config.json defaults: the pure seams, with fakes only where a tokenizer or an engine would be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.engines.chat_template import parse_hermes, render_chat
from inference.engines.errors import ModelHasNoChatTemplate, ToolsNotSupported
from inference.engines.loading import generation_defaults
from inference.errors import InvalidRequest
from inference.protocol import ChatCompletionRequest
from inference.serving.logprobs import chat_logprobs, chat_request_logprobs, completion_logprobs
from inference.serving.tools import chat_turns, constraint, plan_tools, structured_of, tool_calls
from inference.types import ChatTurn, ParsedToolCalls, StructuredOutput, TokenLogprob, ToolCall

from .fakes import FakeEngine, started_app

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time"}}


def _req(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **fields})


# ---- response_format and tool_choice -> one constraint --------------------------------------------------


def test_response_format_becomes_a_constraint() -> None:
    assert structured_of(None) is None
    assert structured_of(_req(response_format={"type": "text"}).response_format) is None
    assert structured_of(_req(response_format={"type": "json_object"}).response_format) == \
        StructuredOutput(json_object=True)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    got = structured_of(_req(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": schema, "strict": True}}).response_format)
    assert got is not None and json.loads(got.json_schema or "") == schema
    with pytest.raises(InvalidRequest) as caught:
        structured_of(_req(response_format={"type": "json_schema"}).response_format)
    assert caught.value.param == "response_format"


def test_tool_choice_plans() -> None:
    assert plan_tools(_req()).mode == "none"
    assert plan_tools(_req(tools=[WEATHER], tool_choice="none")).mode == "none"
    auto = plan_tools(_req(tools=[WEATHER]))
    assert auto.mode == "auto" and auto.tools[0]["function"]["name"] == "get_weather" and auto.structured is None
    required = plan_tools(_req(tools=[WEATHER, TIME], tool_choice="required"))
    schema = json.loads(required.structured.json_schema)  # type: ignore[union-attr]
    assert schema["type"] == "array" and schema["minItems"] == 1
    assert [a["properties"]["name"]["enum"] for a in schema["items"]["anyOf"]] == [["get_weather"], ["get_time"]]
    named = plan_tools(_req(tools=[WEATHER, TIME], tool_choice={"type": "function",
                                                                "function": {"name": "get_weather"}}))
    assert named.mode == "named" and named.name == "get_weather"
    assert json.loads(named.structured.json_schema) == WEATHER["function"]["parameters"]  # type: ignore[union-attr]


@pytest.mark.parametrize("fields", [
    {"tool_choice": "required"},  # no tools
    {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
])
def test_impossible_tool_choices_are_400(fields: dict) -> None:
    with pytest.raises(InvalidRequest) as caught:
        plan_tools(_req(**fields))
    assert caught.value.param == "tool_choice"


def test_two_constraints_at_once_are_400() -> None:
    req = _req(tools=[WEATHER], tool_choice="required", response_format={"type": "json_object"})
    with pytest.raises(InvalidRequest):
        constraint(req, plan_tools(req))
    req = _req(tools=[WEATHER], response_format={"type": "json_object"})  # auto: the format alone constrains
    assert constraint(req, plan_tools(req)) == StructuredOutput(json_object=True)


def test_tool_calls_read_back_from_the_constrained_output() -> None:
    named = plan_tools(_req(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}))
    got = tool_calls(named, '{"city": "Paris"}', parse_hermes)
    assert got.content is None and [(c.name, c.arguments) for c in got.calls] == [("get_weather", '{"city": "Paris"}')]
    required = plan_tools(_req(tools=[WEATHER, TIME], tool_choice="required"))
    got = tool_calls(required, '[{"name": "get_time", "parameters": {}}, {"name": "get_weather", '
                               '"parameters": {"city": "Oslo"}}]', parse_hermes)
    assert [(c.name, json.loads(c.arguments)) for c in got.calls] == [("get_time", {}), ("get_weather", {"city": "Oslo"})]
    assert len({c.id for c in got.calls}) == 2 and all(c.id.startswith("call_") for c in got.calls)
    assert tool_calls(required, '[{"name": "get_ti', parse_hermes) == ParsedToolCalls('[{"name": "get_ti')  # cut short
    auto = plan_tools(_req(tools=[WEATHER]))
    assert tool_calls(auto, "plain", lambda text: ParsedToolCalls("parsed " + text)).content == "parsed plain"


def test_hermes_calls_are_parsed_and_text_stays_content() -> None:
    got = parse_hermes('Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
                       '</tool_call><tool_call>{"name": "get_time", "arguments": {}}</tool_call>')
    assert got.content == "Let me check."
    assert [(c.name, json.loads(c.arguments)) for c in got.calls] == [("get_weather", {"city": "Paris"}),
                                                                      ("get_time", {})]
    assert parse_hermes("no calls here") == ParsedToolCalls("no calls here")
    broken = "<tool_call>{not json</tool_call>"
    assert parse_hermes(broken) == ParsedToolCalls(broken)
    assert parse_hermes('<tool_call>{"name": "f", "arguments": {"x": 1}}').calls[0].name == "f"  # unclosed at EOS


def test_history_with_tool_calls_and_results_becomes_turns() -> None:
    req = ChatCompletionRequest.model_validate({"messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]})
    turns = chat_turns(req.messages)
    assert [t.role for t in turns] == ["system", "user", "assistant", "tool"]
    assert turns[2].tool_calls == (ToolCall("call_1", "get_weather", '{"city":"Oslo"}'),)
    assert turns[3].tool_call_id == "call_1" and turns[3].content == "sunny"
    with pytest.raises(ValueError, match="tool_call_id"):
        ChatCompletionRequest.model_validate({"messages": [{"role": "tool", "content": "x"}]})


# ---- chat templates: tools rendered, or refused -----------------------------------------------------------


class _Tokenizer:
    """A tokenizer's apply_chat_template: renders tools when `renders_tools`, ignores them otherwise."""

    def __init__(self, renders_tools: bool, template: str | None = "{{ messages }}") -> None:
        self.renders_tools = renders_tools
        self.chat_template = template
        self.seen: list = []

    def apply_chat_template(self, messages, tools=None, add_generation_prompt=True, tokenize=False) -> str:
        self.seen.append((messages, tools))
        return json.dumps([messages, tools if self.renders_tools else None])


def test_a_template_that_renders_tools_gets_them_and_the_history() -> None:
    tok = _Tokenizer(renders_tools=True)
    turns = [ChatTurn("user", "hi"), ChatTurn("assistant", "", (ToolCall("c1", "f", '{"a": 1}'),)),
             ChatTurn("tool", "42", tool_call_id="c1")]
    text = render_chat(tok, turns, tools=[WEATHER])
    messages, tools = json.loads(text)
    assert tools == [WEATHER]
    assert messages[1]["tool_calls"][0]["function"] == {"name": "f", "arguments": {"a": 1}}  # an object for tojson
    assert messages[2]["tool_call_id"] == "c1"


def test_a_template_that_ignores_tools_is_refused_not_dropped() -> None:
    with pytest.raises(ToolsNotSupported) as caught:
        render_chat(_Tokenizer(renders_tools=False), [ChatTurn("user", "hi")], tools=[WEATHER])
    assert caught.value.param == "tools" and "does not support tools" in caught.value.message
    assert render_chat(_Tokenizer(renders_tools=False), [ChatTurn("user", "hi")])  # no tools: fine
    with pytest.raises(ModelHasNoChatTemplate):
        render_chat(_Tokenizer(True, template=None), [ChatTurn("user", "hi")])


# ---- logprobs shapes ----------------------------------------------------------------------------------


def test_logprobs_in_openais_two_shapes() -> None:
    assert chat_request_logprobs(None, None) is None
    assert chat_request_logprobs(True, None) == 0 and chat_request_logprobs(True, 5) == 5
    with pytest.raises(InvalidRequest):
        chat_request_logprobs(False, 2)
    tokens = [TokenLogprob("Hé", -0.5, (("Hé", -0.5), ("Hi", -1.5))), TokenLogprob("!", -0.1)]
    chat = chat_logprobs(tokens)["content"]
    assert chat[0] == {"token": "Hé", "logprob": -0.5, "bytes": list("Hé".encode()), "top_logprobs": [
        {"token": "Hé", "logprob": -0.5, "bytes": list("Hé".encode())}, {"token": "Hi", "logprob": -1.5,
                                                                      "bytes": [72, 105]}]}
    legacy = completion_logprobs(tokens, offset=4)
    assert legacy == {"text_offset": [4, 6], "token_logprobs": [-0.5, -0.1], "tokens": ["Hé", "!"],
                      "top_logprobs": [{"Hé": -0.5, "Hi": -1.5}, {}]}


# ---- generation_config.json defaults ------------------------------------------------------------------


def test_generation_defaults_read_like_vllm(tmp_path: Path) -> None:
    assert generation_defaults(tmp_path) == {}
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"temperature": 0.6, "top_p": 0.9, "top_k": 20, "repetition_penalty": 1.1, "do_sample": True,
         "eos_token_id": 2, "max_new_tokens": 10}))
    assert generation_defaults(tmp_path) == {"temperature": 0.6, "top_p": 0.9, "top_k": 20, "repetition_penalty": 1.1}
    (tmp_path / "generation_config.json").write_text("{not json")
    assert generation_defaults(tmp_path) == {}


@pytest.mark.parametrize("mode", ["auto", "vllm"])
async def test_generation_defaults_apply_unless_the_request_sets_them(tmp_path: Path, mode: str) -> None:
    (tmp_path / "generation_config.json").write_text(json.dumps({"temperature": 0.6, "top_k": 20,
                                                                 "repetition_penalty": 1.1}))
    engine = FakeEngine()
    async with started_app(engine, model_path=tmp_path, generation_config=mode) as (_, client):
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        assert (await client.post("/v1/chat/completions", json={**body, "temperature": 0.2, "top_k": 5,
                                                                "repetition_penalty": 1.0})).status_code == 200
    default, explicit = engine.requests[0].params, engine.requests[1].params
    if mode == "auto":
        assert (default.temperature, default.top_k, default.repetition_penalty, default.top_p) == (0.6, 20, 1.1, 1.0)
    else:
        assert (default.temperature, default.top_k, default.repetition_penalty) == (1.0, 0, 1.0)
    assert (explicit.temperature, explicit.top_k, explicit.repetition_penalty) == (0.2, 5, 1.0)
