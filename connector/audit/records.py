"""The audit record: one frozen value per handled message, made from its `Trail`, with its canonical JSON form.

`from_trail` copies what the trail noted (it is mutable; the record is not), applying the content mode
(`full`: the question and answer as text, `hash`: their SHA-256 digests, `none`: left out) and, when asked, the
personal-data masking of `connector.core.pii.mask`. `canonical` is the one byte form that is hashed: JSON with
sorted keys, no spaces, UTF-8 (not ASCII-escaped), so the same record always hashes the same everywhere.
Anchor records (written by a purge) say which records were removed and the hash of the last one, so the chain
that remains still verifies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ..core.trail import Trail

ContentMode = Literal["full", "hash", "none"]
Kind = Literal["message", "anchor"]
GENESIS = "0" * 64  # the previous hash of the first record of a chain


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What is recorded of one message (kind "message") or of one purge (kind "anchor")."""

    ts: float  # wall-clock seconds (UTC epoch) when the message arrived, rounded to the millisecond
    kind: Kind = "message"
    platform: str = ""
    conversation_id: str = ""
    conversation_kind: str = ""
    sender_id: str = ""
    sender_name: str = ""
    departments: tuple[str, ...] = ()
    message_id: str = ""
    content: ContentMode = "full"  # how question and answer are kept
    question: str = ""
    answer: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    delivery: str = ""  # card, webhook, robot
    outcome: str = "answered"  # answered, failed, refused, rate_limited, denied
    reason: str = ""
    skill: str = ""
    cited: tuple[tuple[str, float], ...] = ()  # (source, score) of the passages cited
    denied: tuple[str, ...] = ()  # documents the access rules left out
    purged_through: int = 0  # anchor: the last sequence number removed
    purged_last_hash: str = ""  # anchor: that record's hash (the first remaining record's prev_hash)
    purged_count: int = 0

    @property
    def time(self) -> str:
        """ISO 8601, UTC, milliseconds."""
        return iso(self.ts)

    def fields(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples as lists, cited as objects)."""
        data = asdict(self)
        data["departments"] = list(self.departments)
        data["denied"] = list(self.denied)
        data["cited"] = [{"source": source, "score": score} for source, score in self.cited]
        data["time"] = self.time
        if self.kind == "message":
            for name in ("purged_through", "purged_last_hash", "purged_count"):
                del data[name]
        return data

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> AuditRecord:
        """The inverse of `fields` (a spilled record read back, a stored body)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["departments"] = tuple(known.get("departments", ()))
        known["denied"] = tuple(known.get("denied", ()))
        known["cited"] = tuple((c["source"], float(c["score"])) for c in known.get("cited", ()))
        return cls(**known)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def canonical(data: dict[str, Any]) -> str:
    """Sorted keys, no insignificant whitespace, UTF-8 text as is: the form that is hashed."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Recorder:
    """Makes records from trails with the configured content mode and masking."""

    content: ContentMode = "full"
    mask_pii: bool = False
    masker: Callable[[str], str] | None = field(default=None, compare=False)

    def _text(self, text: str) -> str:
        if self.content == "none":
            return ""
        if self.content == "hash":
            return f"sha256:{sha256(text)}" if text else ""
        return self._mask(text)

    def _mask(self, text: str) -> str:
        if not self.mask_pii or not text:
            return text
        if self.masker is not None:
            return self.masker(text)
        from ..core.pii import mask  # the personal-data masker (issue 16)

        return mask(text)

    def record(self, trail: Trail) -> AuditRecord:
        m = trail.message
        return AuditRecord(
            ts=round(trail.started_at, 3), platform=m.platform, conversation_id=m.conversation_id,
            conversation_kind=m.conversation_kind, sender_id=m.sender_id, sender_name=self._mask(m.sender_name),
            departments=tuple(trail.departments), message_id=m.message_id, content=self.content,
            question=self._text(m.text), answer=self._text(trail.answer), model=trail.model,
            prompt_tokens=trail.prompt_tokens, completion_tokens=trail.completion_tokens,
            latency_ms=round(trail.latency_s * 1000), delivery=trail.delivery, outcome=trail.outcome,
            reason=trail.reason, skill=trail.skill,
            cited=tuple((c.source, float(c.score)) for c in trail.cited), denied=tuple(trail.denied))


def anchor(ts: float, purged_through: int, purged_last_hash: str, purged_count: int) -> AuditRecord:
    return AuditRecord(ts=round(ts, 3), kind="anchor", outcome="", purged_through=purged_through,
                       purged_last_hash=purged_last_hash, purged_count=purged_count)
