"""DingTalk's HTTP side: OAuth token, Stream gateway open, cards, robot sends and the files of messages sent to
the robot (robot/messageFiles/download and its temporary link), the session webhook, and the
old-style API host's parts (oapi.dingtalk.com, served on the same port): the contact API's user detail
(/topapi/v2/user/get) and group custom robots' webhook (/robot/send)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from . import cards, messages
from .state import App, OpenApiError, Sandbox

router = APIRouter()

CARD_INSTANCE = "Card.Instance.Write"
CARD_STREAMING = "Card.Streaming.Write"
ROBOT_SEND = "qyapi_robot_sendmsg"
GET_MEMBER = "qyapi_get_member"
USER_GET = "/topapi/v2/user/get"


def _sandbox(request: Request) -> Sandbox:
    return request.app.state.sandbox


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise OpenApiError(400, "InvalidParameter", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise OpenApiError(400, "InvalidParameter", "the request body must be a JSON object")
    return body


async def _call(request: Request, api: str, scope: str | None,
                handler: Callable[[Sandbox, App, dict[str, Any]], Any]) -> JSONResponse:
    """One authenticated OpenAPI call: token, permission, QPS limit, injected faults, logged."""
    sandbox = _sandbox(request)
    app: App | None = None
    body: Any = None
    try:
        body = await _json(request)
        app = sandbox.app_for_token(request.headers.get("x-acs-dingtalk-access-token"))
        if scope:
            sandbox.require_scope(app, scope)
        sandbox.check_qps(app, api)
        fault = sandbox.take_fault(api)
        if fault is not None:
            if fault.latency_s:
                await asyncio.sleep(fault.latency_s)
            if fault.status:
                raise OpenApiError(fault.status, fault.code, "injected fault")
        status, answer = 200, handler(sandbox, app, body)
    except OpenApiError as exc:
        status, answer = exc.status, exc.body()
    sandbox.log_call(request.method, api, app, body, status, answer)
    return JSONResponse(answer, status_code=status)


@router.post("/v1.0/oauth2/accessToken")
async def access_token(request: Request) -> JSONResponse:
    sandbox = _sandbox(request)
    try:
        body = await _json(request)
        app = sandbox.check_credentials(body.get("appKey"), body.get("appSecret"))
        answer, status = {"accessToken": sandbox.issue_token(app), "expireIn": 7200}, 200
    except OpenApiError as exc:
        app, answer, status = None, exc.body(), exc.status
    sandbox.log_call("POST", "/v1.0/oauth2/accessToken", app, {"appKey": "…", "appSecret": "…"}, status,
                     {"accessToken": "…"} if status == 200 else answer)
    return JSONResponse(answer, status_code=status)


@router.post("/v1.0/gateway/connections/open")
async def open_connection(request: Request) -> JSONResponse:
    sandbox = _sandbox(request)
    app = None
    try:
        body = await _json(request)
        if not body.get("ua"):
            raise OpenApiError(400, "invalidParameter", "ua invalid")
        subscriptions = body.get("subscriptions")
        if not isinstance(subscriptions, list) or not subscriptions:
            raise OpenApiError(400, "invalidParameter", "subscriptions invalid")
        app = sandbox.check_credentials(body.get("clientId"), body.get("clientSecret"))
        fault = sandbox.take_fault("/v1.0/gateway/connections/open")  # a stalling or failing gateway
        if fault is not None:
            if fault.latency_s:
                await asyncio.sleep(fault.latency_s)
            if fault.status:
                raise OpenApiError(fault.status, fault.code, "injected fault")
        ticket = sandbox.issue_ticket(app, [s for s in subscriptions if isinstance(s, dict)])
        answer, status = {"endpoint": sandbox.ws_base + "/connect", "ticket": ticket}, 200
    except OpenApiError as exc:
        answer, status = exc.body(), exc.status
    sandbox.log_call("POST", "/v1.0/gateway/connections/open", app, {"clientId": "…"}, status,
                     {"endpoint": answer.get("endpoint")} if status == 200 else answer)
    return JSONResponse(answer, status_code=status)


@router.post("/v1.0/card/instances")
async def create_card(request: Request) -> JSONResponse:
    return await _call(request, "/v1.0/card/instances", CARD_INSTANCE,
                       lambda s, a, b: {"success": True, "result": cards.create(s, a, b).out_track_id})


@router.post("/v1.0/card/instances/deliver")
async def deliver_card(request: Request) -> JSONResponse:
    return await _call(request, "/v1.0/card/instances/deliver", CARD_INSTANCE,
                       lambda s, a, b: {"success": True, "result": cards.deliver(s, a, b)})


def _create_and_deliver(sandbox: Sandbox, app: App, body: dict[str, Any]) -> dict[str, Any]:
    cards.create(sandbox, app, body)
    return {"success": True, "result": {"outTrackId": body["outTrackId"],
                                        "deliverResults": cards.deliver(sandbox, app, body)}}


@router.post("/v1.0/card/instances/createAndDeliver")
async def create_and_deliver(request: Request) -> JSONResponse:
    return await _call(request, "/v1.0/card/instances/createAndDeliver", CARD_INSTANCE, _create_and_deliver)


def _acknowledged(action: Callable[[Sandbox, App, dict[str, Any]], None]
                  ) -> Callable[[Sandbox, App, dict[str, Any]], dict[str, Any]]:
    """A card mutation answered as DingTalk does: {"success": true, "result": true}."""
    def handler(sandbox: Sandbox, app: App, body: dict[str, Any]) -> dict[str, Any]:
        action(sandbox, app, body)
        return {"success": True, "result": True}

    return handler


@router.put("/v1.0/card/instances")
async def update_card(request: Request) -> JSONResponse:
    return await _call(request, "/v1.0/card/instances#put", CARD_INSTANCE, _acknowledged(cards.update))


@router.put("/v1.0/card/streaming")
async def stream_card(request: Request) -> JSONResponse:
    return await _call(request, "/v1.0/card/streaming", CARD_STREAMING, _acknowledged(cards.stream))


@router.post("/v1.0/robot/oToMessages/batchSend")
async def batch_send(request: Request) -> JSONResponse:
    return await _call(request, "/v1.0/robot/oToMessages/batchSend", ROBOT_SEND, messages.robot_batch_send)


@router.post("/v1.0/robot/groupMessages/send")
async def group_send(request: Request) -> JSONResponse:
    return await _call(request, "/v1.0/robot/groupMessages/send", ROBOT_SEND, messages.robot_group_send)


@router.post("/v1.0/robot/messageFiles/download")
async def message_file(request: Request) -> JSONResponse:
    return await _call(request, "/v1.0/robot/messageFiles/download", ROBOT_SEND, messages.message_file)


@router.get("/sandbox/files/{token}")
async def file_link(token: str, request: Request) -> Response:
    """The temporary link robot/messageFiles/download hands out (DingTalk's are on its file storage)."""
    sent = _sandbox(request).linked_file(token)
    if sent is None:
        return Response(b"<Error><Code>AccessDenied</Code><Message>Request has expired.</Message></Error>",
                        status_code=403, media_type="application/xml")
    return Response(sent.data, media_type="application/octet-stream")


@router.post("/robot/sendBySession")
async def send_by_session(request: Request, session: str = "") -> JSONResponse:
    sandbox = _sandbox(request)
    raw = await request.body()
    fault = sandbox.take_fault("/robot/sendBySession")
    if fault is not None and fault.latency_s:
        await asyncio.sleep(fault.latency_s)
    if fault is not None and fault.status:
        answer, status = {"errcode": -1, "errmsg": "系统繁忙 (injected fault)"}, fault.status
    else:
        answer, status = messages.session_webhook(sandbox, session, raw), 200
    try:
        logged: Any = json.loads(raw)
    except ValueError:
        logged = raw[:200].decode(errors="replace")
    sandbox.log_call("POST", "/robot/sendBySession", None, logged, status, answer)
    return JSONResponse(answer, status_code=status)


@router.post("/robot/send")
async def custom_robot_send(request: Request, access_token: str = "", timestamp: str = "",
                            sign: str = "") -> JSONResponse:
    """A group custom robot's webhook (oapi.dingtalk.com/robot/send), 加签 checked; logged without the token."""
    sandbox = _sandbox(request)
    raw = await request.body()
    answer = messages.custom_robot_send(sandbox, access_token, timestamp, sign, raw)
    try:
        logged: Any = json.loads(raw)
    except ValueError:
        logged = raw[:200].decode(errors="replace")
    sandbox.log_call("POST", "/robot/send", None, logged, 200, answer)
    return JSONResponse(answer)


def _oapi_error(errcode: int, errmsg: str) -> dict[str, Any]:
    return {"errcode": errcode, "errmsg": errmsg, "request_id": uuid.uuid4().hex[:12]}


@router.post(USER_GET)
async def user_get(request: Request, access_token: str = "") -> JSONResponse:
    """The user's details, as the old-style API answers: HTTP 200 and an errcode (0: found)."""
    sandbox = _sandbox(request)
    app: App | None = None
    body: Any = None
    status = 200
    try:
        body = await _json(request)
        app = sandbox.app_for_token(access_token)
        sandbox.require_scope(app, GET_MEMBER)
        sandbox.check_qps(app, USER_GET)
        fault = sandbox.take_fault(USER_GET)
        if fault is not None and fault.latency_s:
            await asyncio.sleep(fault.latency_s)
        if fault is not None and fault.status:
            status, answer = fault.status, _oapi_error(-1, "系统繁忙 (injected fault)")
        elif not isinstance(body.get("userid"), str) or not body["userid"]:
            answer = _oapi_error(400002, "无效的参数 (userid)")
        elif (departments := sandbox.departments_of(app, body["userid"])) is None:
            answer = _oapi_error(60121, "找不到该用户")
        else:
            answer = {"errcode": 0, "errmsg": "ok", "request_id": uuid.uuid4().hex[:12],
                      "result": {"userid": body["userid"], "name": body["userid"], "active": True,
                                 "dept_id_list": departments}}
    except OpenApiError as exc:
        if exc.status == 401:
            answer = _oapi_error(40014, "不合法的access_token")
        elif "QpsLimit" in exc.code:
            answer = _oapi_error(90018, "当前请求数超过了应用的限流 (QPS limit)")
        elif exc.status == 403:
            answer = _oapi_error(60011, f"没有调用该接口的权限，接口权限申请参考：https://open.dingtalk.com/document/"
                                        f"orgapp/add-api-permission (missing permission {GET_MEMBER})")
        else:
            answer = _oapi_error(400002, exc.message)
    sandbox.log_call("POST", USER_GET, app, body, status, answer)
    return JSONResponse(answer, status_code=status)
