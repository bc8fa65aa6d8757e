"""DingTalk's chatbot payload -> the platform-neutral IncomingMessage, and what only DingTalk needs of it.

The core never reads `DingTalkExtras`: it travels on `IncomingMessage.platform_extras` to DingTalk's own reply
sink (connector/dingtalk/replies.py), which answers through the session webhook while it is valid, and to the
file download (connector/dingtalk/files.py), which turns a file message's `downloadCode` into its bytes.
A file, picture or video becomes a platform-neutral `Attachment` (kind, file name) on the message."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..types import Attachment, IncomingMessage


@dataclass(frozen=True, slots=True)
class DingTalkExtras:
    """The conversation's session webhook (a URL valid until `session_webhook_expires_ms`, epoch ms), and the
    download code of a file, picture or video in the message (for /v1.0/robot/messageFiles/download)."""

    session_webhook: str | None = None
    session_webhook_expires_ms: int = 0
    download_code: str | None = None

    def __repr__(self) -> str:  # the webhook and the download code are credentials of a sort: never in logs
        return f"DingTalkExtras(webhook={'set' if self.session_webhook else 'none'}, " \
               f"download_code={'set' if self.download_code else 'none'})"

    def webhook_valid(self, margin_s: float = 5.0) -> bool:
        return bool(self.session_webhook) and self.session_webhook_expires_ms > (time.time() + margin_s) * 1000


def extras_of(message: IncomingMessage) -> DingTalkExtras:
    """The DingTalk part of a message (empty for messages that did not come from DingTalk's Stream)."""
    extras = message.platform_extras
    return extras if isinstance(extras, DingTalkExtras) else DingTalkExtras()


def parse_chatbot_message(data: dict[str, Any], delivery_id: str, received_at: float) -> IncomingMessage:
    """DingTalk's chatbot payload -> the internal message (text from text, richText or audio recognition)."""
    msgtype = str(data.get("msgtype") or "text")
    content = data.get("content") if isinstance(data.get("content"), dict) else {}
    if msgtype == "text":
        text = str((data.get("text") or {}).get("content") or "")
    elif msgtype == "richText":
        parts = content.get("richText") or []
        text = "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict) and "text" in p)
    elif msgtype == "audio":
        text = str(content.get("recognition") or "")
    else:
        text = ""
    attachment = None
    if msgtype in ("file", "picture", "video"):
        attachment = Attachment(msgtype, str(content.get("fileName") or "") if msgtype == "file" else "")
    group = str(data.get("conversationType")) == "2"
    if group:
        text = text.lstrip()  # DingTalk leaves a space where the @-mention was removed
    return IncomingMessage(
        platform="dingtalk",
        message_id=str(data.get("msgId") or delivery_id),
        delivery_id=delivery_id,
        conversation_id=str(data.get("conversationId") or ""),
        conversation_kind="group" if group else "dm",
        sender_id=str(data.get("senderStaffId") or data.get("senderId") or ""),
        sender_name=str(data.get("senderNick") or ""),
        text=text,
        msgtype=msgtype,
        mentioned=bool(data.get("isInAtList")),
        is_admin=bool(data.get("isAdmin")),
        received_at=received_at,
        platform_extras=DingTalkExtras(session_webhook=data.get("sessionWebhook") or None,
                                       session_webhook_expires_ms=int(data.get("sessionWebhookExpiredTime") or 0),
                                       download_code=str(content.get("downloadCode") or "") or None),
        attachment=attachment,
    )
