"""Chat templates, tools included, for both engines: turns -> prompt text with the model's own template.

Tools go through the template (`apply_chat_template(messages, tools=...)`), as vLLM renders them. A
template that ignores `tools` (the embedded SmolLM2's: its Jinja never reads the variable) would drop them
silently; this is detected by rendering the conversation with and without the tools, and refused with
`ToolsNotSupported` (a 400 that says so).

The model's calls are read back in the Hermes format (`<tool_call>{"name": ..., "arguments": {...}}
</tool_call>`), what the templates that render tools this way (Qwen 2.5, Hermes, SmolLM3) teach their
models. The vLLM engine uses vLLM's own Hermes parser instead (vllm_engine.py); this one serves the
transformers engine: the same format, with `json.loads` doing the parsing.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from ..types import ChatTurn, ParsedToolCalls, ToolCall
from .errors import ModelHasNoChatTemplate, ToolsNotSupported


def message_dicts(turns: Sequence[ChatTurn]) -> list[dict[str, Any]]:
    """The turns as the dicts chat templates read (OpenAI's message shape)."""
    out: list[dict[str, Any]] = []
    for turn in turns:
        message: dict[str, Any] = {"role": turn.role, "content": turn.content}
        if turn.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.name, "arguments": _arguments_object(c.arguments)}} for c in turn.tool_calls]
        if turn.tool_call_id is not None:
            message["tool_call_id"] = turn.tool_call_id
        out.append(message)
    return out


def _arguments_object(arguments: str) -> Any:
    """Templates print arguments with `tojson`: give them the object, not its JSON text, where it parses."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def render_chat(tokenizer: Any, turns: Sequence[ChatTurn], add_generation_prompt: bool = True,
                tools: Sequence[dict[str, Any]] | None = None) -> str:
    """The prompt text of a conversation; ToolsNotSupported when `tools` are given and the template ignores
    them, ModelHasNoChatTemplate without a template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelHasNoChatTemplate()
    messages = message_dicts(turns)
    text = tokenizer.apply_chat_template(messages, tools=list(tools) if tools else None,
                                         add_generation_prompt=add_generation_prompt, tokenize=False)
    if tools and text == tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                       tokenize=False):
        raise ToolsNotSupported()
    return str(text)


TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)


def parse_hermes(text: str) -> ParsedToolCalls:
    """Hermes-format tool calls in a model's output; text that is not a well-formed call stays content."""
    if "<tool_call>" not in text:
        return ParsedToolCalls(text)
    calls = []
    for body in TOOL_CALL.findall(text):
        try:
            call = json.loads(body)
            calls.append(ToolCall(id=new_call_id(), name=str(call["name"]),
                                  arguments=json.dumps(call.get("arguments", {}), ensure_ascii=False)))
        except (ValueError, KeyError, TypeError):
            return ParsedToolCalls(text)
    content = text[:text.find("<tool_call>")]
    return ParsedToolCalls(content or None, tuple(calls))


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class TokenizerMethods:
    """The Engine protocol's tokenizer methods over a Hugging Face tokenizer in `self._tokenizer` (the event
    loop's instance), shared by both engines: chat prompts through the template, plain text, ids -> text."""

    _tokenizer: Any

    def tokenize_chat(self, turns: Sequence[ChatTurn], add_generation_prompt: bool = True,
                      tools: Sequence[dict] | None = None) -> list[int]:
        text = render_chat(self._tokenizer, turns, add_generation_prompt, tools)
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def tokenize_text(self, text: str) -> list[int]:
        return list(self._tokenizer(text)["input_ids"])

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(token_ids)))

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        return [str(t) for t in self._tokenizer.convert_ids_to_tokens(list(token_ids))]
