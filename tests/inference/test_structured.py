"""Constrained decoding and tools on the transformers engine, with the embedded model: xgrammar masks per
sequence inside the continuous batch, and a model folder whose chat template renders tools (the embedded
model's own template with a Hermes-style tools block added) served for real to the official client."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import openai
import pytest

from inference.engines.errors import SchemaNotUsable
from inference.settings import InferenceSettings
from inference.types import ChatTurn, GenerationRequest, SamplingParams, StructuredOutput

from ..conftest import DEFAULT_MODEL
from ..servers import inference_server

pytestmark = pytest.mark.slow

TOOLS_TEMPLATE = """{%- if tools %}<|im_start|>system
You can call these functions. To call one, answer with <tool_call>{"name": NAME, "arguments": ARGS}</tool_call>.
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}<|im_end|>
{% endif %}{% for message in messages %}<|im_start|>{{ message['role'] }}
{% if message.tool_calls %}{% for call in message.tool_calls %}<tool_call>{{ {"name": call.function.name,
"arguments": call.function.arguments} | tojson }}</tool_call>{% endfor %}{% else %}{{ message['content'] }}{% endif %}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"], "additionalProperties": False}}}
CITY = json.dumps({"type": "object", "properties": {"city": {"type": "string"}, "rainy": {"type": "boolean"}},
                   "required": ["city", "rainy"], "additionalProperties": False})


@pytest.fixture(scope="module")
def tools_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model's folder with a chat template that renders tools (weights linked, not copied)."""
    if not DEFAULT_MODEL.exists():
        pytest.fail("embedded model missing")
    folder = tmp_path_factory.mktemp("tools-model") / "SmolLM2-tools"
    folder.mkdir()
    for item in DEFAULT_MODEL.iterdir():
        if item.name == "model.safetensors":
            (folder / item.name).symlink_to(item)
        elif item.is_file() and item.name != "chat_template.jinja":
            shutil.copy(item, folder / item.name)
    (folder / "chat_template.jinja").write_text(TOOLS_TEMPLATE)
    return folder


@pytest.fixture(scope="module")
def engine(tools_model: Path):
    from inference.engines.transformers_engine import TransformersEngine

    eng = TransformersEngine(InferenceSettings(model_path=tools_model, max_num_seqs=4, max_model_len=512))
    asyncio.run(eng.start())
    yield eng
    asyncio.run(eng.close())


async def _run(engine, prompt: tuple[int, ...], params: SamplingParams, rid: str) -> tuple[str, str | None]:
    text, reason = "", None
    async for delta in engine.generate(GenerationRequest(rid, prompt, params)):
        text += delta.text
        reason = delta.finish_reason or reason
    return text, reason


def test_tools_are_rendered_by_a_template_that_supports_them(engine) -> None:
    with_tools = engine.detokenize(engine.tokenize_chat([ChatTurn("user", "Weather in Oslo?")], tools=[WEATHER]))
    assert "get_weather" in with_tools and "<tool_call>" in with_tools
    assert "get_weather" not in engine.detokenize(engine.tokenize_chat([ChatTurn("user", "Weather in Oslo?")]))


def test_each_sequence_of_a_batch_keeps_its_own_constraint(engine) -> None:
    """A constrained and a free sequence decoded together: the JSON one is valid and ends with its grammar,
    the free one is exactly what it is alone (the mask of one row never touches another)."""
    prompt = tuple(engine.tokenize_chat([ChatTurn("user", "Is it raining in Paris? Answer as JSON.")]))
    free = tuple(engine.tokenize_chat([ChatTurn("user", "What is the capital of France?")]))
    constrained = SamplingParams(max_tokens=60, temperature=0.0, structured=StructuredOutput(json_schema=CITY))
    greedy = SamplingParams(max_tokens=20, temperature=0.0)

    async def both() -> list[tuple[str, str | None]]:
        return list(await asyncio.gather(_run(engine, prompt, constrained, "c"), _run(engine, free, greedy, "f")))

    (json_text, json_reason), (free_text, _) = asyncio.run(both())
    value = json.loads(json_text)
    assert set(value) == {"city", "rainy"} and isinstance(value["rainy"], bool)
    assert json_reason == "stop"
    alone, _ = asyncio.run(_run(engine, free, greedy, "alone"))
    assert free_text == alone


def test_json_object_mode_and_a_bad_schema(engine) -> None:
    prompt = tuple(engine.tokenize_chat([ChatTurn("user", "Describe a cat as JSON with its name and age.")]))
    text, reason = asyncio.run(_run(engine, prompt, SamplingParams(
        max_tokens=120, temperature=0.0, structured=StructuredOutput(json_object=True)), "o"))
    assert text.startswith("{")  # an object, never a bare value; free keys may run to max_tokens on a 135M model
    if reason == "stop":
        assert isinstance(json.loads(text), dict)
    with pytest.raises(SchemaNotUsable) as caught:
        engine.check_structured(StructuredOutput(json_schema='{"type": "strange"}'))
    assert "strange" in caught.value.message and "/project/" not in caught.value.message  # no C++ source path


def test_the_official_client_gets_tool_calls(tools_model: Path, log_dir: Path) -> None:
    server = inference_server("inference-tools", model_path=tools_model, max_model_len=1024, max_num_seqs=2,
                              warmup="false", engine="transformers")
    server.start(log_dir).wait_ready()
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        ask = [{"role": "user", "content": "What is the weather in Oslo?"}]
        for choice in ({"type": "function", "function": {"name": "get_weather"}}, "required"):
            reply = client.chat.completions.create(model="SmolLM2-tools", messages=ask, tools=[WEATHER],
                                                   tool_choice=choice, temperature=0, max_tokens=60)
            message = reply.choices[0].message
            assert reply.choices[0].finish_reason == "tool_calls"
            assert [c.function.name for c in message.tool_calls] == ["get_weather"]
            assert isinstance(json.loads(message.tool_calls[0].function.arguments)["city"], str)
        # the call and its result go back in the history, rendered by the template
        call = message.tool_calls[0]
        history = [*ask, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                   {"role": "tool", "tool_call_id": call.id, "content": "sunny, 20 degrees"}]
        reply = client.chat.completions.create(model="SmolLM2-tools", messages=history, tools=[WEATHER],
                                               tool_choice="none", temperature=0, max_tokens=30)
        assert reply.choices[0].finish_reason in ("stop", "length") and reply.choices[0].message.content
        stream = list(client.chat.completions.create(
            model="SmolLM2-tools", messages=ask, tools=[WEATHER], stream=True, temperature=0, max_tokens=60,
            tool_choice={"type": "function", "function": {"name": "get_weather"}}))
        calls = [c for chunk in stream if chunk.choices for c in chunk.choices[0].delta.tool_calls or ()]
        assert [c.function.name for c in calls] == ["get_weather"] and calls[0].index == 0
        assert stream[-1].choices[0].finish_reason == "tool_calls"
    finally:
        server.stop()
