"""Platform-neutral internal values: what the core sees of a message, whatever IM it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ConversationKind = Literal["dm", "group"]


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
    platform_extras: object = None  # what only the platform's own reply sink reads (DingTalk: the session webhook)

    @property
    def supported(self) -> bool:
        return self.msgtype in ("text", "richText", "audio")


@dataclass(frozen=True, slots=True)
class Turn:
    role: Literal["user", "assistant"]
    content: str
