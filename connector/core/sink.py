"""Where replies go: the seam between the platform-neutral handler and an IM platform."""

from __future__ import annotations

from typing import Protocol

from ..types import IncomingMessage


class StreamingReply(Protocol):
    """One streamed answer (for DingTalk: an AI card)."""

    @property
    def cancelled(self) -> bool:
        """True once the reply can no longer be shown: generation should stop."""

    async def start(self) -> None:
        """Show the thinking state at once."""

    def update(self, text: str) -> None:
        """The full text so far; sent throttled, never blocking the model stream."""

    async def finish(self, text: str) -> None: ...

    async def fail(self, message: str, partial: str = "") -> None: ...


class ReplySink(Protocol):
    def stream_reply(self, message: IncomingMessage) -> StreamingReply: ...

    async def send_text(self, message: IncomingMessage, markdown: str, title: str = "") -> None:
        """A short, complete reply (commands, notices)."""
