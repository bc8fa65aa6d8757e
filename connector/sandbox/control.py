"""The control API for tests and the chat page: act as users, read what the bot did, inject faults."""

from __future__ import annotations

import base64
import logging
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from .messages import MSG_TYPES, build_push
from .state import App, Fault, Sandbox

router = APIRouter(prefix="/sandbox")
log = logging.getLogger("sandbox")


def _sandbox(request: Request) -> Sandbox:
    return request.app.state.sandbox


def _app(sandbox: Sandbox, client_id: str | None) -> App:
    if client_id is None:
        return next(iter(sandbox.apps.values()))
    app = sandbox.apps.get(client_id)
    if app is None:
        raise HTTPException(404, f"no app {client_id}")
    return app


class SendMessage(BaseModel):
    text: str = ""
    user: str = Field("staff001", description="senderStaffId")
    nick: str | None = None
    msgtype: Literal[MSG_TYPES] = "text"  # type: ignore[valid-type]
    group: str | None = Field(None, description="conversationId of a group; none: a DM with the bot")
    group_title: str = "Sandbox group"
    at_bot: bool = True
    is_admin: bool = False
    app: str | None = None
    file_name: str = Field("report.pdf", description="msgtype file: the file's name")
    file_base64: str | None = Field(None, description="file, picture, video: the bytes (base64), which the bot "
                                                      "then downloads through /v1.0/robot/messageFiles/download")


@router.post("/messages")
async def send_message(body: SendMessage, request: Request) -> dict[str, Any]:
    sandbox = _sandbox(request)
    app = _app(sandbox, body.app)
    data = None
    if body.file_base64 is not None:
        try:
            data = base64.b64decode(body.file_base64, validate=True)
        except ValueError:
            raise HTTPException(400, "file_base64 is not valid base64") from None
    push = build_push(sandbox, app, staff_id=body.user, nick=body.nick or body.user, text=body.text,
                      msgtype=body.msgtype, group_id=body.group, group_title=body.group_title, at_bot=body.at_bot,
                      is_admin=body.is_admin, file_name=body.file_name, file_data=data)
    sent = request.app.state.gateway.push(push)
    log.info("message %s from %s to %s: %s", push.msg_id, body.user, app.client_id, body.text[:200])
    return {"msgId": push.msg_id, "conversationId": push.data["conversationId"], "delivered": push.delivered,
            "sent": sent, "data": push.data}


@router.get("/dm-id")
async def dm_id(request: Request, user: str, app: str | None = None) -> dict[str, Any]:
    from .messages import dm_conversation_id

    return {"conversationId": dm_conversation_id(_app(_sandbox(request), app), user)}


@router.get("/pushes/{msg_id}")
async def get_push(msg_id: str, request: Request) -> dict[str, Any]:
    push = _sandbox(request).pushes.get(msg_id)
    if push is None:
        raise HTTPException(404, f"no message {msg_id}")
    return {"msgId": push.msg_id, "messageIds": push.message_ids, "deliveries": push.deliveries,
            "ackedMessageId": push.acked_message_id, "delivered": push.delivered}


@router.post("/pushes/{msg_id}/redeliver")
async def redeliver(msg_id: str, request: Request) -> dict[str, Any]:
    """Push a message again now, as DingTalk does when it believes it was not ACKed (new headers.messageId)."""
    push = _sandbox(request).pushes.get(msg_id)
    if push is None:
        raise HTTPException(404, f"no message {msg_id}")
    return {"sent": request.app.state.gateway.redeliver(push), "deliveries": push.deliveries}


@router.get("/cards")
async def list_cards(request: Request, conversation_id: str | None = None) -> list[dict[str, Any]]:
    return [c.view() for c in _sandbox(request).cards.values()
            if conversation_id is None or c.conversation_id == conversation_id]


@router.get("/cards/{out_track_id}")
async def get_card(out_track_id: str, request: Request) -> dict[str, Any]:
    card = _sandbox(request).cards.get(out_track_id)
    if card is None:
        raise HTTPException(404, f"no card {out_track_id}")
    return card.view()


@router.get("/replies")
async def list_replies(request: Request, conversation_id: str | None = None) -> list[dict[str, Any]]:
    return [r for r in _sandbox(request).replies if conversation_id is None or r["conversationId"] == conversation_id]


@router.get("/acks")
async def list_acks(request: Request, msg_id: str | None = None) -> list[dict[str, Any]]:
    return [a for a in _sandbox(request).acks if msg_id is None or a["msgId"] == msg_id]


@router.get("/calls")
async def list_calls(request: Request, path: str | None = None, since: float = 0.0) -> list[dict[str, Any]]:
    return [c for c in _sandbox(request).calls if (path is None or c["path"] == path) and c["time"] >= since]


@router.get("/connections")
async def list_connections(request: Request) -> list[dict[str, Any]]:
    return [{"connectionId": c.connection_id, "app": c.app.client_id, "closed": c.closed, "silent": c.silent,
             "subscriptions": c.subscriptions, "openedAt": c.opened_at}
            for c in _sandbox(request).connections.values()]


class ConnectionAction(BaseModel):
    app: str | None = None
    connection_id: str | None = None
    reason: str = "server restart"


@router.post("/connections/{action}")
async def connection_action(action: Literal["drop", "disconnect", "silent", "ping"], body: ConnectionAction,
                            request: Request) -> dict[str, Any]:
    sandbox, gateway = _sandbox(request), request.app.state.gateway
    targets = [c for c in sandbox.connections.values() if not c.closed
               and (body.connection_id is None or c.connection_id == body.connection_id)
               and (body.app is None or c.app.client_id == body.app)]
    for conn in targets:
        if action == "drop":
            gateway.drop(conn)
        elif action == "disconnect":
            gateway.send_disconnect(conn, body.reason)
        elif action == "silent":
            gateway.silence(conn)
        else:
            gateway.ping(conn)
    return {"affected": [c.connection_id for c in targets]}


class AppConfig(BaseModel):
    client_id: str
    client_secret: str | None = None
    robot_code: str | None = None
    scopes: list[str] | None = None
    templates: dict[str, bool] | None = None
    qps_limit: int | None = Field(None, ge=1)


@router.post("/apps")
async def configure_app(body: AppConfig, request: Request) -> dict[str, Any]:
    sandbox = _sandbox(request)
    app = sandbox.apps.get(body.client_id)
    if app is None:
        if not body.client_secret:
            raise HTTPException(400, "a new app needs client_secret")
        app = sandbox.add_app(App(client_id=body.client_id, client_secret=body.client_secret,
                                  robot_code=body.robot_code or body.client_id))
    if body.client_secret:
        app.client_secret = body.client_secret
    if body.scopes is not None:
        app.scopes = set(body.scopes)
    if body.templates is not None:
        app.templates.update(body.templates)
    if body.qps_limit is not None:
        app.qps_limit = body.qps_limit
    return {"clientId": app.client_id, "robotCode": app.robot_code, "scopes": sorted(app.scopes),
            "templates": app.templates, "qpsLimit": app.qps_limit}


class CustomRobotSpec(BaseModel):
    conversation_id: str = Field(..., description="the group's conversationId (made if new)")
    title: str = "Ops group"
    secret: str | None = Field(None, description="加签 secret (SEC...); none: the robot checks no signature")
    name: str = "Alertmanager"


@router.post("/custom-robots")
async def add_custom_robot(body: CustomRobotSpec, request: Request) -> dict[str, Any]:
    """A custom robot in a group, as 群设置 > 智能群助手 > 添加机器人 > 自定义 makes one: its webhook and secret."""
    sandbox = _sandbox(request)
    robot = sandbox.add_custom_robot(body.conversation_id, body.title, body.secret, body.name)
    return {"webhook": f"{sandbox.http_base}/robot/send?access_token={robot.access_token}",
            "conversationId": robot.conversation_id, "secret": robot.secret}


class DirectorySpec(BaseModel):
    users: dict[str, list[int]] = Field(..., description="staff id -> the department ids the contact API returns")
    app: str | None = Field(None, description="only for this app (client id); none: every app")
    replace: bool = Field(False, description="forget the users set before (for this app, or every app's)")


@router.post("/directory")
async def set_directory(body: DirectorySpec, request: Request) -> dict[str, Any]:
    """The staff directory behind /topapi/v2/user/get: who belongs to which departments."""
    sandbox = _sandbox(request)
    if body.app is not None:
        _app(sandbox, body.app)
    table = sandbox.directory.setdefault(body.app, {})
    if body.replace:
        table.clear()
    table.update(body.users)
    return {"app": body.app, "users": table}


@router.get("/directory")
async def get_directory(request: Request) -> dict[str, Any]:
    return {key or "*": users for key, users in _sandbox(request).directory.items()}


class FaultSpec(BaseModel):
    api: str = Field(..., description="an API path such as /v1.0/card/streaming, or *")
    status: int = Field(500, ge=0, le=599, description="0: latency only")
    code: str = "unknownError"
    count: int = Field(1, ge=-1, description="-1: until cleared")
    latency_s: float = Field(0.0, ge=0.0, le=120.0)


@router.post("/faults")
async def add_fault(body: FaultSpec, request: Request) -> dict[str, Any]:
    _sandbox(request).faults.append(Fault(api=body.api, status=body.status, code=body.code, remaining=body.count,
                                          latency_s=body.latency_s))
    return {"faults": len(_sandbox(request).faults)}


@router.delete("/faults")
async def clear_faults(request: Request) -> dict[str, Any]:
    _sandbox(request).faults.clear()
    return {"faults": 0}


class Config(BaseModel):
    redeliver_after_s: float | None = Field(None, gt=0)
    max_redeliveries: int | None = Field(None, ge=0)
    disconnect_close_after_s: float | None = Field(None, ge=0)
    ping_interval_s: float | None = Field(None, ge=0)


@router.post("/config")
async def configure(body: Config, request: Request) -> dict[str, Any]:
    sandbox = _sandbox(request)
    for name in ("redeliver_after_s", "max_redeliveries", "disconnect_close_after_s"):
        value = getattr(body, name)
        if value is not None:
            setattr(sandbox, name, value)
    if body.ping_interval_s is not None:
        request.app.state.gateway.ping_interval_s = body.ping_interval_s
    return {"redeliver_after_s": sandbox.redeliver_after_s, "max_redeliveries": sandbox.max_redeliveries,
            "disconnect_close_after_s": sandbox.disconnect_close_after_s,
            "ping_interval_s": request.app.state.gateway.ping_interval_s}


@router.post("/tokens/expire")
async def expire_tokens(request: Request) -> dict[str, Any]:
    _sandbox(request).expire_tokens()
    return {"expired": True}


@router.post("/webhooks/expire")
async def expire_webhooks(request: Request) -> dict[str, Any]:
    _sandbox(request).expire_webhooks()
    return {"expired": True}


@router.get("/timeline/{conversation_id}")
async def timeline(conversation_id: str, request: Request) -> dict[str, Any]:
    sandbox = _sandbox(request)
    conv = sandbox.conversations.get(conversation_id)
    if conv is None:
        return {"conversationId": conversation_id, "items": []}
    items = []
    for item in conv.timeline:
        if item["kind"] == "card":
            card = sandbox.cards.get(item["outTrackId"])
            items.append({**item, "card": card.view() if card else None})
        else:
            items.append(item)
    return {"conversationId": conversation_id, "kind": conv.kind, "title": conv.title, "items": items}


@router.post("/reset")
async def reset(request: Request) -> dict[str, Any]:
    sandbox = _sandbox(request)
    for name in ("cards", "pushes", "by_message_id", "conversations", "webhooks"):
        getattr(sandbox, name).clear()
    for name in ("acks", "replies", "calls", "faults"):
        getattr(sandbox, name).clear()
    sandbox.undelivered.clear()
    return {"reset": True}


@router.get("/info")
async def info(request: Request) -> dict[str, Any]:
    sandbox = _sandbox(request)
    app = next(iter(sandbox.apps.values()))
    return {"openapi": sandbox.http_base, "gateway": sandbox.ws_base, "defaultApp": app.client_id,
            "robotCode": app.robot_code, "templates": sorted(t for t, ok in app.templates.items() if ok)}
