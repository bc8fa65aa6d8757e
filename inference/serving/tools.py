"""response_format and tools/tool_choice of a chat request -> the engine's constraint and back (pure).

- response_format: "text" (none), "json_object" (any JSON object), "json_schema" (its schema).
- tools with tool_choice "auto" (the default when tools are given): the tools are rendered by the model's
  chat template (a template that would drop them is a 400: engines/chat_template.py) and the calls are read
  from the output by the engine's parser.
- tool_choice "required": the output is constrained to a JSON array of {"name", "parameters"} of the given
  tools (vLLM's schema for it); a named function: to that function's parameters. Either way the calls come
  from the constrained JSON, whatever the model's call format.
- tool_choice "none": the tools are neither rendered nor parsed (nothing can call them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from ..engines.chat_template import new_call_id
from ..errors import InvalidRequest
from ..protocol import ChatCompletionRequest, ChatMessage, ResponseFormat
from ..types import ChatTurn, ParsedToolCalls, StructuredOutput, ToolCall

ToolMode = Literal["none", "auto", "required", "named"]


@dataclass(frozen=True)
class ToolPlan:
    mode: ToolMode
    tools: tuple[dict[str, Any], ...] = ()  # for the chat template (OpenAI's tool dicts)
    structured: StructuredOutput | None = None
    name: str | None = None  # the named function


def structured_of(response_format: ResponseFormat | None) -> StructuredOutput | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return StructuredOutput(json_object=True)
    if response_format.json_schema is None or not response_format.json_schema.schema_:
        raise InvalidRequest("response_format of type json_schema needs json_schema.schema (a JSON Schema).",
                             param="response_format")
    return StructuredOutput(json_schema=json.dumps(response_format.json_schema.schema_))


def _parameters(tool: Any) -> dict[str, Any]:
    return tool.function.parameters or {"type": "object", "properties": {}}


def plan_tools(req: ChatCompletionRequest) -> ToolPlan:
    tools = req.tools or []
    choice = req.tool_choice
    if not tools:
        if choice not in (None, "none", "auto"):
            raise InvalidRequest("tool_choice needs tools: give the functions in `tools`.", param="tool_choice")
        return ToolPlan("none")
    if choice == "none":
        return ToolPlan("none")
    dicts = tuple(t.model_dump(exclude_none=True) for t in tools)
    if choice is None or choice == "auto":
        return ToolPlan("auto", dicts)
    if choice == "required":
        schema = {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": [
            {"properties": {"name": {"type": "string", "enum": [t.function.name]}, "parameters": _parameters(t)},
             "required": ["name", "parameters"]} for t in tools]}}
        return ToolPlan("required", dicts, StructuredOutput(json_schema=json.dumps(schema)))
    wanted = [t for t in tools if t.function.name == choice.function.name]  # type: ignore[union-attr]
    if not wanted:
        raise InvalidRequest(f"tool_choice names the function '{choice.function.name}', which is not in tools.",  # type: ignore[union-attr]
                             param="tool_choice")
    return ToolPlan("named", dicts, StructuredOutput(json_schema=json.dumps(_parameters(wanted[0]))),
                    wanted[0].function.name)


def constraint(req: ChatCompletionRequest, plan: ToolPlan) -> StructuredOutput | None:
    """The one constraint of the request: the tool choice's or the response format's (not both)."""
    fmt = structured_of(req.response_format)
    if plan.structured is not None and fmt is not None:
        raise InvalidRequest("response_format cannot be combined with tool_choice 'required' or a named "
                             "function: both constrain the output.", param="response_format")
    return plan.structured or fmt


def tool_calls(plan: ToolPlan, text: str, parse: Any) -> ParsedToolCalls:
    """The calls in a finished output: from the constrained JSON, or by the engine's parser (`parse`)."""
    if plan.mode == "named":
        return ParsedToolCalls(None, (ToolCall(new_call_id(), plan.name or "", text),))
    if plan.mode == "required":
        try:
            calls = json.loads(text)
            return ParsedToolCalls(None, tuple(ToolCall(new_call_id(), str(c["name"]),
                                                        json.dumps(c["parameters"], ensure_ascii=False))
                                               for c in calls))
        except (ValueError, KeyError, TypeError):
            return ParsedToolCalls(text)  # cut short (max_tokens): the text as it is
    if plan.mode == "auto":
        return parse(text)
    return ParsedToolCalls(text)


def chat_turns(messages: list[ChatMessage]) -> list[ChatTurn]:
    """The request's messages as turns: developer is system; tool calls and tool results kept."""
    turns = []
    for m in messages:
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ())
        turns.append(ChatTurn("system" if m.role == "developer" else m.role, m.text(), calls, m.tool_call_id))
    return turns


def wire_calls(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]
