"""The emulator's world: apps, tokens, tickets, connections, pushed messages, cards, replies, faults.

Pure state and rules; the HTTP and WebSocket layers call into it. Every protocol
rule it enforces is listed, with its source, in docs/dingtalk-protocol-facts.md.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

BOT_TOPIC = "/v1.0/im/bot/messages/get"
SDK_AI_CARD_TEMPLATE = "382e4302-551d-4880-bf29-a30acfab2e71.schema"
SANDBOX_AI_CARD_TEMPLATE = "sandbox-ai-card.schema"
ALL_SCOPES = ("Card.Streaming.Write", "Card.Instance.Write", "qyapi_robot_sendmsg", "qyapi_get_member")
TICKET_TTL_S = 90.0
TOKEN_TTL_S = 7200
WEBHOOK_TTL_MS = 90 * 60 * 1000
FILE_LINK_TTL_S = 300.0  # how long a messageFiles/download link works (*unverified*: DingTalk says "temporary")

FLOW_PROCESSING, FLOW_INPUTTING, FLOW_FINISHED, FLOW_EXECUTING, FLOW_FAILED = "1", "2", "3", "4", "5"


def now_ms() -> int:
    return int(time.time() * 1000)


class OpenApiError(Exception):
    """An error answer in DingTalk's OpenAPI format."""

    def __init__(self, status: int, code: str, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "requestid": uuid.uuid4().hex.upper(), **self.extra}


@dataclass
class App:
    client_id: str
    client_secret: str
    robot_code: str
    name: str = "Assistant"
    chatbot_user_id: str = "$:LWCP_v1:$sandbox-bot"
    corp_id: str = "ding-sandbox-corp"
    scopes: set[str] = field(default_factory=lambda: set(ALL_SCOPES))
    templates: dict[str, bool] = field(default_factory=lambda: {SDK_AI_CARD_TEMPLATE: True,
                                                                SANDBOX_AI_CARD_TEMPLATE: True})
    qps_limit: int = 20


@dataclass
class Connection:
    connection_id: str
    app: App
    subscriptions: list[dict[str, str]]
    outbox: asyncio.Queue[str | None]
    opened_at: float = field(default_factory=time.time)
    silent: bool = False
    closed: bool = False
    transport: Any = None  # set by the gateway: lets "silent" stop reading

    def subscribed(self, kind: str, topic: str) -> bool:
        return any(s.get("type") == kind and s.get("topic") in (topic, "*") for s in self.subscriptions)


@dataclass
class Push:
    """One chatbot message pushed to the app, and its deliveries (a redelivery has a new messageId)."""

    msg_id: str
    app: App
    data: dict[str, Any]
    message_ids: list[str] = field(default_factory=list)
    acked_message_id: str | None = None
    deliveries: int = 0
    delivered: bool = True  # False: a group message that did not mention the bot
    created: float = field(default_factory=time.time)


@dataclass
class Card:
    out_track_id: str
    app: App
    template_id: str
    params: dict[str, str]
    created: float = field(default_factory=time.time)
    flow_status: str = FLOW_PROCESSING
    spaces: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    streaming_keys: set[str] = field(default_factory=set)
    finalized: bool = False
    error: bool = False
    updates: int = 0
    first_stream_at: float | None = None
    finalized_at: float | None = None
    conversation_id: str | None = None

    def view(self) -> dict[str, Any]:
        return {"outTrackId": self.out_track_id, "templateId": self.template_id, "params": self.params,
                "flowStatus": self.flow_status, "spaces": self.spaces, "texts": self.texts,
                "finalized": self.finalized, "error": self.error, "updates": self.updates,
                "created": self.created, "firstStreamAt": self.first_stream_at, "finalizedAt": self.finalized_at,
                "conversationId": self.conversation_id}


@dataclass
class Fault:
    api: str  # a path such as /v1.0/card/streaming, or "*"
    status: int = 500
    code: str = "unknownError"
    remaining: int = 1  # -1: until cleared
    latency_s: float = 0.0


@dataclass
class CustomRobot:
    """A group's custom robot (自定义机器人): its webhook's access_token and, with 加签, its signing secret."""

    access_token: str
    conversation_id: str
    secret: str | None
    name: str = "Custom robot"
    sent: deque[float] = field(default_factory=deque)  # monotonic times of the last minute's messages


@dataclass
class SentFile:
    """The bytes of a file, picture or video a user sent the robot, behind its downloadCode."""

    app: App
    name: str
    data: bytes


@dataclass
class Conversation:
    conversation_id: str
    kind: str  # "1" DM, "2" group
    title: str
    timeline: list[dict[str, Any]] = field(default_factory=list)


class Sandbox:
    def __init__(self, *, http_base: str = "", ws_base: str = "", redeliver_after_s: float = 60.0,
                 max_redeliveries: int = 3, disconnect_close_after_s: float = 10.0) -> None:
        self.http_base = http_base
        self.ws_base = ws_base
        self.redeliver_after_s = redeliver_after_s
        self.max_redeliveries = max_redeliveries
        self.disconnect_close_after_s = disconnect_close_after_s
        self.apps: dict[str, App] = {}
        self.tickets: dict[str, tuple[App, list[dict[str, str]], float]] = {}
        self.tokens: dict[str, tuple[App, float]] = {}
        self.connections: dict[str, Connection] = {}
        self.pushes: dict[str, Push] = {}
        self.by_message_id: dict[str, Push] = {}
        self.acks: list[dict[str, Any]] = []
        self.cards: dict[str, Card] = {}
        self.replies: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.webhooks: dict[str, tuple[App, str, int, str]] = {}  # token -> (app, conversation, expiry ms, staff)
        self.conversations: dict[str, Conversation] = {}
        self.custom_robots: dict[str, CustomRobot] = {}  # webhook access_token -> robot
        self.files: dict[str, SentFile] = {}  # downloadCode -> the file sent with that message
        self.file_links: dict[str, tuple[str, float]] = {}  # download link token -> (downloadCode, expiry)
        self.undelivered: deque[Push] = deque()
        self._qps: dict[tuple[str, str], deque[float]] = {}
        # the staff directory: staff id -> department ids, for every app (key None) or one app's corp (its id)
        self.directory: dict[str | None, dict[str, list[int]]] = {None: {}}
        self.rng = random.Random()
        self.add_app(App(client_id="ding-sandbox-app", client_secret="sandbox-secret",
                         robot_code="ding-sandbox-app"))

    # ---- apps, credentials -------------------------------------------------------------

    def add_app(self, app: App) -> App:
        self.apps[app.client_id] = app
        return app

    def check_credentials(self, client_id: str | None, secret: str | None) -> App:
        app = self.apps.get(client_id or "")
        if app is None or not secret or not secrets.compare_digest(app.client_secret, secret):
            raise OpenApiError(400, "invalidClientIdOrSecret", "无效的clientId或clientSecret (invalid appKey or appSecret)")
        return app

    def issue_ticket(self, app: App, subscriptions: list[dict[str, str]]) -> str:
        ticket = secrets.token_urlsafe(24)
        self.tickets[ticket] = (app, subscriptions, time.monotonic() + TICKET_TTL_S)
        return ticket

    def redeem_ticket(self, ticket: str) -> tuple[App, list[dict[str, str]]] | None:
        entry = self.tickets.pop(ticket, None)  # single use
        if entry is None or entry[2] < time.monotonic():
            return None
        return entry[0], entry[1]

    def issue_token(self, app: App, ttl_s: float = TOKEN_TTL_S) -> str:
        token = secrets.token_hex(16)
        self.tokens[token] = (app, time.time() + ttl_s)
        return token

    def app_for_token(self, token: str | None) -> App:
        entry = self.tokens.get(token or "")
        if entry is None or entry[1] < time.time():
            raise OpenApiError(401, "InvalidAuthentication", "不合法的access_token")
        return entry[0]

    def expire_tokens(self) -> None:
        self.tokens = {t: (a, 0.0) for t, (a, _) in self.tokens.items()}

    # ---- calls, limits, faults ---------------------------------------------------------

    def log_call(self, method: str, path: str, app: App | None, body: Any, status: int, answer: Any) -> None:
        self.calls.append({"time": time.time(), "method": method, "path": path,
                           "app": app.client_id if app else None, "body": body, "status": status,
                           "answer": answer})

    def check_qps(self, app: App, api: str) -> None:
        window = self._qps.setdefault((app.client_id, api), deque())
        now = time.monotonic()
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) >= app.qps_limit:
            raise OpenApiError(403, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
                               f"The QPS of this appKey for api {api} exceeds the limit of {app.qps_limit}.")
        window.append(now)

    def take_fault(self, api: str) -> Fault | None:
        for fault in self.faults:
            if fault.api in (api, "*") and fault.remaining != 0:
                if fault.remaining > 0:
                    fault.remaining -= 1
                return fault
        return None

    @staticmethod
    def require_scope(app: App, scope: str) -> None:
        if scope not in app.scopes:
            raise OpenApiError(403, "Forbidden.AccessDenied.AccessTokenPermissionDenied",
                               f"没有调用该接口的权限，接口权限申请参考 (missing scope {scope})",
                               {"accessdenieddetail": {"requiredScopes": [scope]}})

    def departments_of(self, app: App, user_id: str) -> list[int] | None:
        """The user's department ids as the contact API tells `app`; None: no such member."""
        for key in (app.client_id, None):
            found = self.directory.get(key, {}).get(user_id)
            if found is not None:
                return found
        return None

    # ---- connections and pushes --------------------------------------------------------

    def live_connections(self, app: App, kind: str = "CALLBACK", topic: str = BOT_TOPIC) -> list[Connection]:
        return [c for c in self.connections.values()
                if c.app is app and not c.closed and c.subscribed(kind, topic)]

    def frame(self, conn: Connection, kind: str, topic: str, data: dict[str, Any],
              message_id: str | None = None) -> tuple[str, str]:
        message_id = message_id or uuid.uuid4().hex
        payload = {"specVersion": "1.0", "type": kind,
                   "headers": {"appId": conn.app.client_id, "connectionId": conn.connection_id,
                               "contentType": "application/json", "messageId": message_id,
                               "time": str(now_ms()), "topic": topic},
                   "data": json.dumps(data, ensure_ascii=False)}
        return message_id, json.dumps(payload, ensure_ascii=False)

    def deliver(self, push: Push) -> bool:
        """Send (or re-send) a push to one live connection, chosen at random. False: none is live."""
        conns = [c for c in self.live_connections(push.app) if not c.silent]
        if not conns:
            return False
        conn = self.rng.choice(conns)
        message_id, text = self.frame(conn, "CALLBACK", BOT_TOPIC, push.data)
        push.message_ids.append(message_id)
        push.deliveries += 1
        self.by_message_id[message_id] = push
        conn.outbox.put_nowait(text)
        return True

    def record_ack(self, conn: Connection, ack: dict[str, Any]) -> None:
        headers = ack.get("headers") or {}
        message_id = headers.get("messageId")
        push = self.by_message_id.get(message_id or "")
        self.acks.append({"time": time.time(), "connectionId": conn.connection_id, "messageId": message_id,
                          "code": ack.get("code"), "message": ack.get("message"), "data": ack.get("data"),
                          "msgId": push.msg_id if push else None})
        if push is not None and push.acked_message_id is None and ack.get("code") == 200:
            push.acked_message_id = message_id

    # ---- conversations -----------------------------------------------------------------

    def conversation(self, conversation_id: str, kind: str, title: str) -> Conversation:
        conv = self.conversations.get(conversation_id)
        if conv is None:
            conv = self.conversations[conversation_id] = Conversation(conversation_id, kind, title)
        return conv

    def new_webhook(self, app: App, conversation_id: str, created_ms: int, staff_id: str) -> tuple[str, int]:
        token = secrets.token_urlsafe(18)
        expiry = created_ms + WEBHOOK_TTL_MS
        self.webhooks[token] = (app, conversation_id, expiry, staff_id)
        return f"{self.http_base}/robot/sendBySession?session={token}", expiry

    def expire_webhooks(self) -> None:
        self.webhooks = {t: (a, c, 0, s) for t, (a, c, _, s) in self.webhooks.items()}

    def file_link(self, app: App, download_code: str) -> str:
        """A short-lived link to the file behind the app's downloadCode (robot/messageFiles/download)."""
        sent = self.files.get(download_code)
        if sent is None or sent.app is not app:
            raise OpenApiError(400, "invalidParameter.downloadCode", "downloadCode 无效 (unknown download code)")
        token = secrets.token_urlsafe(18)
        self.file_links[token] = (download_code, time.monotonic() + FILE_LINK_TTL_S)
        return f"{self.http_base}/sandbox/files/{token}"

    def linked_file(self, token: str) -> SentFile | None:
        code, expiry = self.file_links.get(token, ("", 0.0))
        return self.files.get(code) if expiry > time.monotonic() else None

    def add_custom_robot(self, conversation_id: str, title: str, secret: str | None, name: str) -> CustomRobot:
        """A custom robot in a group (the group is made if new); its webhook is `/robot/send?access_token=`."""
        self.conversation(conversation_id, "2", title)
        robot = CustomRobot(secrets.token_hex(32), conversation_id, secret, name)
        self.custom_robots[robot.access_token] = robot
        return robot

    def add_reply(self, conversation_id: str, via: str, msgtype: str, content: dict[str, Any],
                  app: App | None) -> dict[str, Any]:
        reply = {"time": time.time(), "conversationId": conversation_id, "via": via, "msgtype": msgtype,
                 "content": content, "app": app.client_id if app else None}
        self.replies.append(reply)
        conv = self.conversations.get(conversation_id)
        if conv is not None:
            conv.timeline.append({"kind": "reply", **reply})
        return reply
