"""The skill interface: what a skill sees of a message, and the three things it may do with it.

A skill looks at each incoming message (and its conversation) in the configured order and returns one of:

- ``Answer``: it answers the message itself; the chain stops and the model is not asked;
- ``Augment``: context for the model (instructions and/or retrieved passages with their sources); the chain
  goes on and the model answers with everything the skills added, citing the passages' sources;
- ``None``: it passes the message on.

Third-party skills are Python packages that subclass ``Skill`` and declare an entry point in the group
``appliance.skills`` (see docs/skills.md). A skill never talks to DingTalk or the model server directly:
it gets the conversation through ``SkillContext`` and the model through ``services.model`` (OpenAI wire).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..types import IncomingMessage, Turn

if TYPE_CHECKING:
    from ..core.quota import QuotaReader


@dataclass(frozen=True, slots=True)
class Answer:
    """The skill's own reply (markdown); nothing else runs."""

    text: str
    title: str = ""


@dataclass(frozen=True, slots=True)
class Passage:
    """A piece of retrieved text and where it came from (shown as a citation)."""

    text: str
    source: str  # e.g. "handbook.pdf (p. 3)"
    score: float = 0.0
    quote: str = ""  # the sentence that best answers the question, shown with the citation


@dataclass(frozen=True, slots=True)
class Augment:
    """Context for the model. Passages are given in order; the last ones are dropped first when space is short."""

    instructions: str = ""
    passages: tuple[Passage, ...] = ()
    max_tokens: int | None = None  # a longer (or shorter) answer when this context is used
    note: str = ""  # shown to the user under the answer, after the sources (never given to the model)
    # a ready answer (the documents' own sentence): shown in the card like the model's, with the citations; the
    # model is not asked
    answer: str = ""


SkillResult = Answer | Augment | None


class SkillError(Exception):
    """A skill that cannot run as configured, worded for the operator."""


class ModelError(Exception):
    """The model could not answer (server down, error mid-stream, timeout)."""

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable, self.retry_after = retryable, retry_after


class AttachmentError(Exception):
    """A message's attachment could not be fetched. ``reason``: "too_large" (over the limit asked for),
    "unavailable" (the platform refused or the link expired), or "network"."""

    def __init__(self, message: str, reason: str = "unavailable") -> None:
        super().__init__(message)
        self.reason = reason


Download = Callable[[IncomingMessage, int], Awaitable[bytes]]  # (message, max bytes) -> the attachment's bytes


class Model(Protocol):
    """The model over the OpenAI wire format, as the connector lends it (connector.core.model.ModelClient).
    Failures are ModelError, except where a method says it answers None (or a report) instead."""

    async def model_id(self) -> str:
        """The served model's id (the configured one, or the server's first)."""
        ...

    async def context_window(self) -> int | None:
        """Its context window in tokens, when the server says."""
        ...

    async def count_tokens(self, messages: list[dict[str, str]]) -> int | None:
        """The exact prompt size of these chat messages, when the server can tell."""
        ...

    def stream_chat(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> AsyncIterator[str]:
        """The answer's text, as it is generated. Closing the iterator cancels the generation."""
        ...

    async def health(self) -> dict[str, Any]:
        """What /test reports of the server: url, health ("ok", "HTTP 503", "unreachable (...)"), version."""
        ...


class SkillConfig(BaseModel):
    """One skill's table in the config file: ``[connector.plugins.<name>]``. Skills extend it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    order: int | None = Field(None, description="lower runs first; default: the skill's own")


@dataclass(frozen=True)
class SkillServices:
    """What the connector lends every skill when it starts."""

    model: Model  # the model over the OpenAI wire format
    skills: Callable[[], Sequence[Skill]]  # the enabled skills, in order (for /help)
    version: str = ""
    platform_name: str = "DingTalk"
    context_ttl_s: int = 1800  # how long a conversation's context is kept (the settings' context_ttl_s)
    quota: QuotaReader | None = None  # today's usage and limits (the /quota command); None: no quotas set
    download: Download | None = None  # a message's attachment, fetched from the IM platform; AttachmentError
    # the embedding model shared by the skills that embed (knowledge base, files), loaded at the first call with a
    # thread count; None: each skill loads its own (tests, the skills CLI)
    embedder: Callable[[int | None], Any] | None = None


@dataclass
class SkillContext:
    """One message as the skills see it."""

    message: IncomingMessage
    services: SkillServices
    context_key: str
    load_history: Callable[[], Awaitable[list[Turn]]]
    clear_history: Callable[[], Awaitable[None]]
    augments: list[Augment] = field(default_factory=list)  # what earlier skills added
    departments: tuple[str, ...] = ()  # the sender's department ids, when the directory knows them
    denied: list[str] = field(default_factory=list)  # documents access rules left out (skills add; audited)

    @property
    def text(self) -> str:
        return self.message.text.strip()


class Skill:
    """Subclass this. Class attributes describe the skill; instances hold its validated configuration."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    commands: ClassVar[Mapping[str, str]] = {}  # command -> help line (shown by /help)
    requires: ClassVar[tuple[str, ...]] = ()  # PEP 508 requirements, checked by `verify` and at start
    config_model: ClassVar[type[SkillConfig]] = SkillConfig
    default_order: ClassVar[int] = 100
    enabled_by_default: ClassVar[bool] = False
    attachments: ClassVar[tuple[str, ...]] = ()  # kinds of attachment the skill reads ("file"); others are refused

    def __init__(self, config: SkillConfig) -> None:
        self.config = config

    async def start(self, services: SkillServices) -> None:
        """Open what the skill needs (indexes, clients). Called once, before the first message."""
        self.services = services

    async def stop(self) -> None:
        """Release it. Called once at shutdown."""

    async def handle(self, ctx: SkillContext) -> SkillResult:
        return None

    def check(self) -> list[str]:
        """Problems beyond missing packages (a folder that does not exist...), worded for the operator."""
        return []

    def status(self) -> dict[str, Any]:
        """A few facts for /test and /health."""
        return {}

    def __repr__(self) -> str:
        return f"<skill {self.name}>"
