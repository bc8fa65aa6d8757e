"""The narrow engine protocol every engine implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from ..types import (ChatTurn, EngineInfo, EngineStats, GenerationDelta, GenerationRequest, ParsedToolCalls,
                     StructuredOutput)


@runtime_checkable
class Engine(Protocol):
    async def start(self) -> None:
        """Load the model; returns when the engine can generate."""

    async def close(self) -> None:
        """Stop generating and free the model."""

    def info(self) -> EngineInfo: ...

    def stats(self) -> EngineStats: ...

    async def health(self) -> bool:
        """True while the engine can serve requests."""

    def tokenize_chat(self, turns: Sequence[ChatTurn], add_generation_prompt: bool = True,
                      tools: Sequence[dict] | None = None) -> list[int]:
        """The prompt with the model's chat template; `tools` (OpenAI's function tools) rendered by it, or
        ToolsNotSupported when the template would drop them."""

    def tokenize_text(self, text: str) -> list[int]: ...

    def detokenize(self, token_ids: Sequence[int]) -> str: ...

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        """The vocabulary's string of each token (/tokenize's token_strs)."""

    def check_structured(self, spec: StructuredOutput) -> None:
        """Raise RequestInvalidForModel when the constraint cannot be served (a bad schema): before queueing."""

    def parse_tool_calls(self, text: str) -> ParsedToolCalls:
        """The model's tool calls in its output (the format its chat template teaches)."""

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Deltas of one sequence; the last one carries finish_reason.

        Closing the iterator early (client gone) aborts the sequence: the one way to cancel, so the
        engine aborts exactly that sequence and nothing shares its id.
        """
