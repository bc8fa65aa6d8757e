"""Platform-neutral internal values: what the core sees of a message, whatever IM it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ConversationKind = Literal["dm", "group"]
AttachmentKind = Literal["file", "picture", "video"]


@dataclass(frozen=True, slots=True)
class Attachment:
    """What the user sent besides text: its kind and file name. The bytes stay on the platform until a skill
    asks for them (SkillServices.download); how to fetch them travels in the platform's extras."""

    kind: AttachmentKind
    name: str = ""  # the file name the user sent ("report.pdf"); empty for pictures and videos

    @property
    def suffix(self) -> str:
        """The file name's extension, lower case, with its dot ("" when there is none)."""
        stem, dot, ext = self.name.rpartition(".")
        return f".{ext.lower()}" if dot and stem and ext else ""


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    platform: str
    message_id: str  # stable across redeliveries (DingTalk data.msgId)
    delivery_id: str  # one delivery (DingTalk headers.messageId)
    conversation_id: str
    conversation_kind: ConversationKind
    sender_id: str
    sender_name: str
    text: str  # the text to answer (mention stripped, audio recognition, rich-text parts)
    msgtype: str
    mentioned: bool = False
    is_admin: bool = False
    received_at: float = 0.0  # time.monotonic() at receipt
    platform_extras: object = None  # what only the platform's own parts read (DingTalk: session webhook, download code)
    attachment: Attachment | None = None  # a file, picture or video sent with (or instead of) text

    @property
    def supported(self) -> bool:
        return self.msgtype in ("text", "richText", "audio")


@dataclass(frozen=True, slots=True)
class Turn:
    role: Literal["user", "assistant"]
    content: str
