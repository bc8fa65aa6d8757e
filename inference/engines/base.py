"""The narrow engine protocol every engine implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from ..types import ChatTurn, EngineInfo, EngineStats, GenerationDelta, GenerationRequest


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

    def tokenize_chat(self, turns: Sequence[ChatTurn], add_generation_prompt: bool = True) -> list[int]: ...

    def tokenize_text(self, text: str) -> list[int]: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Deltas of one sequence; the last one carries finish_reason.

        Closing the iterator early (client gone) aborts the sequence: the one way to cancel, so the
        engine aborts exactly that sequence and nothing shares its id.
        """
