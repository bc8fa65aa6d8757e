"""Where replies go: the seam between the platform-neutral handler and an IM platform.

A message that has to wait is acknowledged at arrival (`acknowledge`: for DingTalk a card saying how many are
ahead); the reply it returns is the one `stream_reply` (or `send_text`) later uses for that message, so the asker
sees one card from "queued" to the answer. `release` closes an acknowledgement the pipeline never used."""

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


class QueuedReply(Protocol):
    """A waiting message's acknowledgement."""

    def show_position(self, ahead: int) -> bool:
        """Show a new queue position if the platform's budget allows now; False: not shown (try again later)."""


class ReplySink(Protocol):
    def stream_reply(self, message: IncomingMessage) -> StreamingReply:
        """The message's reply: its acknowledgement if it has one, else a new one."""

    def acknowledge(self, message: IncomingMessage, ahead: int) -> QueuedReply | None:
        """Tell the asker at once that the message is queued with `ahead` before it; None: nothing shown."""

    def release(self, message: IncomingMessage) -> None:
        """The message's pipeline is done: close its acknowledgement if nothing used it (a duplicate)."""

    async def send_text(self, message: IncomingMessage, markdown: str, title: str = "") -> None:
        """A short, complete reply (commands, notices)."""
