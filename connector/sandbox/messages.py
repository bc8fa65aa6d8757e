"""Chatbot messages as DingTalk pushes them, and the robot's replies (session webhook, robot send APIs)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from .state import App, OpenApiError, Push, Sandbox, SentFile, now_ms

MSG_TYPES = ("text", "richText", "picture", "audio", "file", "video")


def _sender_id(staff_id: str) -> str:
    return "$:LWCP_v1:$" + hashlib.sha1(staff_id.encode()).hexdigest()[:22]


def dm_conversation_id(app: App, staff_id: str) -> str:
    return "cid" + hashlib.sha1(f"{app.client_id}/{staff_id}".encode()).hexdigest()[:24] + "=="


def build_push(sandbox: Sandbox, app: App, *, staff_id: str, nick: str, text: str = "", msgtype: str = "text",
               group_id: str | None = None, group_title: str = "Sandbox group", at_bot: bool = True,
               is_admin: bool = False, file_name: str = "report.pdf", file_data: bytes | None = None) -> Push:
    """A message typed by a user, as DingTalk would push it to the bot (group: only when @-mentioned). A file,
    picture or video with ``file_data`` can be fetched through /v1.0/robot/messageFiles/download."""
    if msgtype not in MSG_TYPES:
        raise ValueError(f"msgtype must be one of {', '.join(MSG_TYPES)}")
    created = now_ms()
    msg_id = "msg" + uuid.uuid4().hex[:24]
    group = group_id is not None
    conversation_id = group_id if group else dm_conversation_id(app, staff_id)
    conv = sandbox.conversation(conversation_id, "2" if group else "1", group_title if group else staff_id)
    webhook, expiry = sandbox.new_webhook(app, conversation_id, created, staff_id)
    data: dict[str, Any] = {
        "msgId": msg_id,
        "msgtype": msgtype,
        "conversationId": conversation_id,
        "conversationType": "2" if group else "1",
        "senderId": _sender_id(staff_id),
        "senderStaffId": staff_id,
        "senderNick": nick,
        "senderCorpId": app.corp_id,
        "chatbotUserId": app.chatbot_user_id,
        "chatbotCorpId": app.corp_id,
        "robotCode": app.robot_code,
        "isAdmin": is_admin,
        "isInAtList": bool(group and at_bot),
        "sessionWebhook": webhook,
        "sessionWebhookExpiredTime": expiry,
        "createAt": created,
        "senderPlatform": "Web",
    }
    if group:
        data["conversationTitle"] = group_title
        data["atUsers"] = [{"dingtalkId": app.chatbot_user_id}] if at_bot else []
    # group messages keep a leading space where the @-mention was removed
    shown = (" " + text) if group and at_bot else text
    download = "dc" + uuid.uuid4().hex[:16]
    if file_data is not None and msgtype in ("picture", "file", "video"):
        sandbox.files[download] = SentFile(app, file_name, file_data)
    if msgtype == "text":
        data["text"] = {"content": shown}
    elif msgtype == "richText":
        data["content"] = {"richText": [{"text": shown}, {"type": "picture", "downloadCode": download}]}
    elif msgtype == "picture":
        data["content"] = {"downloadCode": download, "pictureDownloadCode": download}
    elif msgtype == "audio":
        data["content"] = {"recognition": text, "duration": 3000, "downloadCode": download}
    elif msgtype == "file":
        data["content"] = {"fileName": file_name, "downloadCode": download, "spaceId": "1", "fileId": "1"}
    elif msgtype == "video":
        data["content"] = {"downloadCode": download, "duration": 5000, "videoType": "mp4"}
    push = Push(msg_id=msg_id, app=app, data=data, delivered=not group or at_bot)
    conv.timeline.append({"kind": "message", "time": created / 1000, "msgId": msg_id, "msgtype": msgtype,
                          "text": text, "senderNick": nick, "senderStaffId": staff_id, "atBot": at_bot,
                          "delivered": push.delivered, **({"fileName": file_name} if msgtype == "file" else {})})
    return push


def _msg_param(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    key = body.get("msgKey")
    raw = body.get("msgParam")
    if not key or raw is None:
        raise OpenApiError(400, "MissingParameter", "msgKey and msgParam are required")
    try:
        param = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        param = None
    if not isinstance(param, dict):
        raise OpenApiError(400, "param.invalid", "msgParam must be a JSON string of an object")
    if key == "sampleText" and "content" not in param:
        raise OpenApiError(400, "param.invalid", "sampleText needs msgParam.content")
    if key == "sampleMarkdown" and ("text" not in param or "title" not in param):
        raise OpenApiError(400, "param.invalid", "sampleMarkdown needs msgParam.title and msgParam.text")
    if key not in ("sampleText", "sampleMarkdown", "sampleImageMsg", "sampleLink", "sampleFile"):
        raise OpenApiError(400, "param.invalid", f"unknown msgKey {key}")
    return key, param


def robot_batch_send(sandbox: Sandbox, app: App, body: dict[str, Any]) -> dict[str, Any]:
    if body.get("robotCode") != app.robot_code:
        raise OpenApiError(400, "param.robotCodeInvalid", "robotCode does not belong to this app")
    user_ids = body.get("userIds") or []
    if not isinstance(user_ids, list) or not user_ids:
        raise OpenApiError(400, "MissingParameter", "userIds is required")
    key, param = _msg_param(body)
    for staff_id in user_ids:
        sandbox.add_reply(dm_conversation_id(app, staff_id), "robot.oToMessages", key, param, app)
    return {"processQueryKey": uuid.uuid4().hex, "invalidStaffIdList": [], "flowControlledStaffIdList": []}


def message_file(sandbox: Sandbox, app: App, body: dict[str, Any]) -> dict[str, Any]:
    """robot/messageFiles/download: a temporary link to the file behind a downloadCode of the app's messages."""
    if body.get("robotCode") != app.robot_code:
        raise OpenApiError(400, "param.robotCodeInvalid", "robotCode does not belong to this app")
    code = body.get("downloadCode")
    if not isinstance(code, str) or not code:
        raise OpenApiError(400, "MissingParameter", "downloadCode is required")
    return {"downloadUrl": sandbox.file_link(app, code)}


def robot_group_send(sandbox: Sandbox, app: App, body: dict[str, Any]) -> dict[str, Any]:
    if body.get("robotCode") != app.robot_code:
        raise OpenApiError(400, "param.robotCodeInvalid", "robotCode does not belong to this app")
    conversation_id = body.get("openConversationId")
    if not conversation_id:
        raise OpenApiError(400, "MissingParameter", "openConversationId is required")
    key, param = _msg_param(body)
    sandbox.add_reply(conversation_id, "robot.groupMessages", key, param, app)
    return {"processQueryKey": uuid.uuid4().hex}


WEBHOOK_MAX_BYTES = 20000
CUSTOM_ROBOT_TIMESTAMP_WINDOW_MS = 3600 * 1000  # "与请求调用时间误差不能超过1小时"
CUSTOM_ROBOT_PER_MINUTE = 20


def _webhook_content(raw: bytes) -> tuple[str, dict[str, Any]] | dict[str, Any]:
    """(msgtype, content) of a robot webhook's body, or the errcode answer that refuses it."""
    if len(raw) > WEBHOOK_MAX_BYTES:
        return {"errcode": 460101, "errmsg": "message too long"}
    try:
        body = json.loads(raw)
    except ValueError:
        return {"errcode": 300005, "errmsg": "invalid json"}
    msgtype = body.get("msgtype") if isinstance(body, dict) else None
    if msgtype == "text" and isinstance(body.get("text"), dict) and "content" in body["text"]:
        content = body["text"]
    elif msgtype == "markdown" and isinstance(body.get("markdown"), dict) and "text" in body["markdown"]:
        content = body["markdown"]
    elif msgtype in ("actionCard", "feedCard", "link"):
        content = body.get(msgtype) or {}
    else:
        return {"errcode": 40035, "errmsg": "缺少参数 msgtype/content (missing msgtype or content)"}
    return msgtype, {**content, "at": body.get("at")}


def session_webhook(sandbox: Sandbox, token: str, raw: bytes) -> dict[str, Any]:
    """The sessionWebhook: HTTP 200 with errcode, as DingTalk's robot webhooks answer."""
    entry = sandbox.webhooks.get(token)
    if entry is None or entry[2] < now_ms():
        return {"errcode": 300001, "errmsg": "session 不存在"}
    app, conversation_id, _, _ = entry
    parsed = _webhook_content(raw)
    if isinstance(parsed, dict):
        return parsed
    sandbox.add_reply(conversation_id, "sessionWebhook", parsed[0], parsed[1], app)
    return {"errcode": 0, "errmsg": "ok"}


def custom_robot_send(sandbox: Sandbox, access_token: str, timestamp: str, sign: str, raw: bytes) -> dict[str, Any]:
    """A group custom robot's webhook (/robot/send): the access_token, the 加签 signature and its timestamp
    (within an hour of now), at most 20 messages a minute; HTTP 200 with an errcode, as DingTalk answers."""
    robot = sandbox.custom_robots.get(access_token)
    if robot is None:
        return {"errcode": 300001, "errmsg": "token is not exist"}
    if robot.secret is not None:
        try:
            stamp = int(timestamp)
        except ValueError:
            return {"errcode": 310000, "errmsg": "invalid timestamp"}
        if abs(now_ms() - stamp) > CUSTOM_ROBOT_TIMESTAMP_WINDOW_MS:
            return {"errcode": 310000, "errmsg": "invalid timestamp"}
        digest = hmac.new(robot.secret.encode(), f"{timestamp}\n{robot.secret}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), sign):  # the query string is decoded
            return {"errcode": 310000, "errmsg": "sign not match"}
    now = time.monotonic()
    while robot.sent and now - robot.sent[0] >= 60.0:
        robot.sent.popleft()
    if len(robot.sent) >= CUSTOM_ROBOT_PER_MINUTE:
        return {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}
    parsed = _webhook_content(raw)
    if isinstance(parsed, dict):
        return parsed
    robot.sent.append(now)
    sandbox.add_reply(robot.conversation_id, "customRobot", parsed[0], {**parsed[1], "robot": robot.name}, None)
    return {"errcode": 0, "errmsg": "ok"}
