"""What happened to one message, noted as it goes through the pipeline: the source of its audit record and of
its quota charge.

The outermost policy middleware opens a `Trail` for each message (`opened`); every later stage notes what it
did on the current one (`current()`): the identity middleware the sender's departments, a refusing middleware
the outcome and its reason, the handler the skill, answer, cited sources and documents left out, the model
client the model and token counts, the reply sink the delivery path. Each conversation's messages run in their
own task, so a context variable keeps the trails of concurrent messages apart (tasks the handler starts inherit
it); outside a trail, `note` does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

from ..types import IncomingMessage

Outcome = Literal["answered", "failed", "refused", "rate_limited", "denied"]
OUTCOMES: tuple[Outcome, ...] = ("answered", "failed", "refused", "rate_limited", "denied")


@dataclass(frozen=True, slots=True)
class Cited:
    """A document passage the answer cited (or that the access rules left out)."""

    source: str  # e.g. "finance/budget.md (p. 2)"
    score: float = 0.0


@dataclass
class Trail:
    message: IncomingMessage
    started_at: float = field(default_factory=time.time)  # wall clock, for the record's time
    started_mono: float = field(default_factory=time.monotonic)
    departments: tuple[str, ...] = ()
    outcome: Outcome = "answered"
    reason: str = ""  # why it was refused / denied / failed (a catalogue key or a short text, never a secret)
    skill: str = ""  # the skill that answered, or those that added context ("kb", "glossary")
    answer: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    delivery: str = ""  # card, webhook, robot (the last path used)
    cited: list[Cited] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)  # documents the access rules left out
    finished_mono: float | None = None

    def refuse(self, outcome: Outcome, reason: str) -> None:
        self.outcome, self.reason = outcome, reason

    def add_usage(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        """One model call's usage (several calls for one message add up)."""
        self.model = self.model or model
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    @property
    def latency_s(self) -> float:
        end = self.finished_mono if self.finished_mono is not None else time.monotonic()
        return max(0.0, end - self.started_mono)


_current: ContextVar[Trail | None] = ContextVar("connector_trail", default=None)


def current() -> Trail | None:
    """The trail of the message being handled in this task, if any."""
    return _current.get()


@contextmanager
def opened(message: IncomingMessage) -> Iterator[Trail]:
    """A new trail for `message`, current until the block ends (then it is finished, not cleared of data)."""
    trail = Trail(message)
    token = _current.set(trail)
    try:
        yield trail
    finally:
        trail.finished_mono = time.monotonic()
        _current.reset(token)


def note_delivery(path: str) -> None:
    trail = current()
    if trail is not None:
        trail.delivery = path


def note_usage(model: str, prompt_tokens: int, completion_tokens: int) -> None:
    trail = current()
    if trail is not None:
        trail.add_usage(model, prompt_tokens, completion_tokens)


def refuse(outcome: Outcome, reason: str) -> None:
    trail = current()
    if trail is not None:
        trail.refuse(outcome, reason)
