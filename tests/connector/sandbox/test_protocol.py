"""The emulator's protocol rules, checked with raw HTTP and WebSocket clients."""

from __future__ import annotations

import json
import time
from urllib.parse import quote_plus

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from connector.sandbox import SANDBOX_AI_CARD_TEMPLATE

from .helpers import new_app, send

SUBSCRIBE = [{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]


def _open(emulator, client_id: str, secret: str) -> dict:
    r = httpx.post(emulator.url + "/v1.0/gateway/connections/open",
                   json={"clientId": client_id, "clientSecret": secret, "subscriptions": SUBSCRIBE,
                         "ua": "test/1.0", "localIp": "127.0.0.1"})
    r.raise_for_status()
    return r.json()


def _ws(emulator, client_id: str, secret: str):
    opened = _open(emulator, client_id, secret)
    return connect(f"{opened['endpoint']}?ticket={quote_plus(opened['ticket'])}", open_timeout=5, close_timeout=1)


def _token(emulator, client_id: str, secret: str) -> dict[str, str]:
    r = httpx.post(emulator.url + "/v1.0/oauth2/accessToken", json={"appKey": client_id, "appSecret": secret})
    assert r.status_code == 200 and r.json()["expireIn"] == 7200
    return {"x-acs-dingtalk-access-token": r.json()["accessToken"]}


def _card_body(out_track_id: str, **extra) -> dict:
    return {"cardTemplateId": SANDBOX_AI_CARD_TEMPLATE, "outTrackId": out_track_id,
            "cardData": {"cardParamMap": {"flowStatus": "1"}}, "callbackType": "STREAM",
            "imRobotOpenDeliverModel": {"spaceType": "IM_ROBOT"}, "openSpaceId": "dtv1.card//IM_ROBOT.staff001",
            **extra}


@pytest.fixture
def app(emulator):
    return new_app(emulator)


def test_frame_format_and_ack_recorded(emulator, app) -> None:
    with _ws(emulator, *app) as ws:
        sent = send(emulator, app[0], "hello")
        frame = json.loads(ws.recv(timeout=5))
        assert frame["specVersion"] == "1.0" and frame["type"] == "CALLBACK"
        headers = frame["headers"]
        assert set(headers) >= {"appId", "connectionId", "contentType", "messageId", "time", "topic"}
        assert headers["topic"] == "/v1.0/im/bot/messages/get" and headers["appId"] == app[0]
        data = json.loads(frame["data"])
        for field in ("msgId", "msgtype", "text", "conversationId", "conversationType", "senderId", "senderStaffId",
                      "senderNick", "senderCorpId", "chatbotUserId", "robotCode", "isInAtList", "sessionWebhook",
                      "sessionWebhookExpiredTime", "createAt", "isAdmin"):
            assert field in data, field
        assert data["msgId"] == sent["msgId"] and data["conversationType"] == "1"
        assert data["sessionWebhookExpiredTime"] == data["createAt"] + 90 * 60 * 1000
        ws.send(json.dumps({"code": 200, "headers": {"contentType": "application/json",
                                                     "messageId": headers["messageId"]},
                            "message": "OK", "data": "{}"}))
        time.sleep(0.3)
    acks = httpx.get(emulator.url + "/sandbox/acks", params={"msg_id": sent["msgId"]}).json()
    assert acks[0]["messageId"] == headers["messageId"] and acks[0]["code"] == 200


def test_ticket_is_single_use(emulator, app) -> None:
    opened = _open(emulator, *app)
    url = f"{opened['endpoint']}?ticket={quote_plus(opened['ticket'])}"
    with connect(url, open_timeout=5):
        pass
    with pytest.raises(InvalidStatus):
        connect(url, open_timeout=5)
    with pytest.raises(InvalidStatus):
        connect(f"{opened['endpoint']}?ticket=made-up", open_timeout=5)


def test_open_rejects_bad_requests(emulator, app) -> None:
    r = httpx.post(emulator.url + "/v1.0/gateway/connections/open",
                   json={"clientId": app[0], "clientSecret": app[1], "subscriptions": SUBSCRIBE})
    assert r.status_code == 400 and r.json()["message"] == "ua invalid"
    r = httpx.post(emulator.url + "/v1.0/gateway/connections/open",
                   json={"clientId": app[0], "clientSecret": "nope", "subscriptions": SUBSCRIBE, "ua": "x"})
    assert r.status_code == 400 and r.json()["code"] == "invalidClientIdOrSecret"


def test_system_ping_and_disconnect_frames(emulator, app) -> None:
    with _ws(emulator, *app) as ws:
        httpx.post(emulator.url + "/sandbox/connections/ping", json={"app": app[0]})
        frame = json.loads(ws.recv(timeout=5))
        assert frame["type"] == "SYSTEM" and frame["headers"]["topic"] == "ping"
        assert "opaque" in json.loads(frame["data"])
        httpx.post(emulator.url + "/sandbox/connections/disconnect", json={"app": app[0], "reason": "upgrade"})
        frame = json.loads(ws.recv(timeout=5))
        assert frame["headers"]["topic"] == "disconnect" and json.loads(frame["data"])["reason"] == "upgrade"
        with pytest.raises(ConnectionClosed):  # the server closes the socket soon after
            ws.recv(timeout=5)


def test_drop_cuts_the_socket_without_close_frame(emulator, app) -> None:
    with _ws(emulator, *app) as ws:
        httpx.post(emulator.url + "/sandbox/connections/drop", json={"app": app[0]})
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=5)
        assert caught.value.rcvd is None  # no close frame: an abnormal closure


def test_silent_socket_stops_answering_pings(emulator, app) -> None:
    with _ws(emulator, *app) as ws:
        ws.ping().wait(2)  # answered while healthy
        httpx.post(emulator.url + "/sandbox/connections/silent", json={"app": app[0]})
        time.sleep(0.1)
        assert not ws.ping().wait(1.0)
        sent = send(emulator, app[0], "into the void")
        assert not sent["sent"]


def test_several_connections_each_message_to_one(emulator, app) -> None:
    with _ws(emulator, *app) as a, _ws(emulator, *app) as b:
        ids = {send(emulator, app[0], f"m{i}")["msgId"] for i in range(24)}
        got: dict[str, list[str]] = {"a": [], "b": []}
        for name, ws in (("a", a), ("b", b)):
            while True:
                try:
                    got[name].append(json.loads(json.loads(ws.recv(timeout=0.5))["data"])["msgId"])
                except TimeoutError:
                    break
        assert sorted(got["a"] + got["b"]) == sorted(ids)
        assert got["a"] and got["b"]


def test_group_needs_mention_and_message_types(emulator, app) -> None:
    with _ws(emulator, *app) as ws:
        quiet = send(emulator, app[0], "chatting among ourselves", group="cidProtoGroup", at_bot=False)
        assert quiet["delivered"] is False
        mention = send(emulator, app[0], "bot, help", group="cidProtoGroup", at_bot=True)
        data = json.loads(json.loads(ws.recv(timeout=5))["data"])
        assert data["msgId"] == mention["msgId"] and data["text"]["content"] == " bot, help"
        assert data["conversationType"] == "2" and data["isInAtList"] is True
        assert data["conversationTitle"] and data["atUsers"]
        for msgtype, check in (("audio", lambda d: d["content"]["recognition"] == "spoken words"),
                               ("richText", lambda d: d["content"]["richText"][0]["text"] == "spoken words"),
                               ("picture", lambda d: "downloadCode" in d["content"]),
                               ("file", lambda d: d["content"]["fileName"]),
                               ("video", lambda d: "downloadCode" in d["content"])):
            send(emulator, app[0], "spoken words", msgtype=msgtype)
            data = json.loads(json.loads(ws.recv(timeout=5))["data"])
            assert data["msgtype"] == msgtype and check(data), msgtype


def test_access_token_checked_on_every_call(emulator, app) -> None:
    r = httpx.post(emulator.url + "/v1.0/card/instances", json=_card_body("no-token"))
    assert r.status_code == 401 and r.json()["code"] == "InvalidAuthentication"
    headers = _token(emulator, *app)
    assert httpx.post(emulator.url + "/v1.0/card/instances", json=_card_body("tok-1"), headers=headers).status_code == 200
    httpx.post(emulator.url + "/sandbox/tokens/expire")
    assert httpx.post(emulator.url + "/v1.0/card/instances", json=_card_body("tok-2"), headers=headers).status_code == 401
    r = httpx.post(emulator.url + "/v1.0/oauth2/accessToken", json={"appKey": app[0], "appSecret": "bad"})
    assert r.status_code == 400


def test_card_lifecycle_rules(emulator, app) -> None:
    h = _token(emulator, *app)
    url = emulator.url
    r = httpx.post(url + "/v1.0/card/instances/createAndDeliver", json=_card_body("life-1"), headers=h)
    assert r.status_code == 200, r.text
    bad = _card_body("life-2")
    bad["cardData"]["cardParamMap"]["count"] = 3
    r = httpx.post(url + "/v1.0/card/instances", json=bad, headers=h)
    assert r.status_code == 400 and "strings" in r.json()["message"]

    def stream(content: str, **flags) -> httpx.Response:
        body = {"outTrackId": "life-1", "guid": str(time.time()), "key": "content", "content": content,
                "isFull": True, "isFinalize": False, "isError": False, **flags}
        return httpx.put(url + "/v1.0/card/streaming", json=body, headers=h)

    assert stream("Hel").status_code == 200
    assert httpx.get(url + "/sandbox/cards/life-1").json()["flowStatus"] == "2"
    assert stream("lo", isFull=False).status_code == 200
    assert httpx.get(url + "/sandbox/cards/life-1").json()["texts"]["content"] == "Hello"
    # a regular update to a key that is streaming is ignored
    httpx.put(url + "/v1.0/card/instances", headers=h, json={"outTrackId": "life-1", "cardData": {
        "cardParamMap": {"content": "overwritten"}}, "cardUpdateOptions": {"updateCardDataByKey": True}})
    assert httpx.get(url + "/sandbox/cards/life-1").json()["texts"]["content"] == "Hello"
    assert stream("Hello!", isFinalize=True).status_code == 200
    card = httpx.get(url + "/sandbox/cards/life-1").json()
    assert card["finalized"] and card["flowStatus"] == "3"
    late = stream("too late")
    assert late.status_code == 400 and late.json()["code"] == "param.cardFinalized"

    httpx.post(url + "/v1.0/card/instances/createAndDeliver", json=_card_body("life-3"), headers=h)
    httpx.put(url + "/v1.0/card/streaming", headers=h, json={"outTrackId": "life-3", "guid": "g", "key": "content",
                                                             "content": "failed", "isFull": True, "isFinalize": True,
                                                             "isError": True})
    assert httpx.get(url + "/sandbox/cards/life-3").json()["flowStatus"] == "5"

    httpx.post(url + "/sandbox/apps", json={"client_id": app[0], "templates": {"draft.schema": False}})
    r = httpx.post(url + "/v1.0/card/instances", headers=h, json={**_card_body("life-4"), "cardTemplateId": "draft.schema"})
    assert r.status_code == 400 and r.json()["code"] == "param.templateUnpublished"
    r = httpx.post(url + "/v1.0/card/instances/deliver", headers=h,
                   json={"outTrackId": "life-1", "openSpaceId": "nonsense"})
    assert r.status_code == 400


def test_missing_scopes_are_403_with_required_scopes(emulator) -> None:
    client_id, secret = new_app(emulator, scopes=["Card.Instance.Write"])
    h = _token(emulator, client_id, secret)
    httpx.post(emulator.url + "/v1.0/card/instances/createAndDeliver", json=_card_body("scope-1"), headers=h)
    r = httpx.put(emulator.url + "/v1.0/card/streaming", headers=h, json={
        "outTrackId": "scope-1", "guid": "g", "key": "content", "content": "x", "isFull": True})
    assert r.status_code == 403
    assert r.json()["code"] == "Forbidden.AccessDenied.AccessTokenPermissionDenied"
    assert r.json()["accessdenieddetail"]["requiredScopes"] == ["Card.Streaming.Write"]
    r = httpx.post(emulator.url + "/v1.0/robot/oToMessages/batchSend", headers=h, json={
        "robotCode": client_id, "userIds": ["staff001"], "msgKey": "sampleText", "msgParam": '{"content": "x"}'})
    assert r.status_code == 403 and r.json()["accessdenieddetail"]["requiredScopes"] == ["qyapi_robot_sendmsg"]


def test_qps_limit_per_app_and_api(emulator) -> None:
    client_id, secret = new_app(emulator, qps_limit=5)
    h = _token(emulator, client_id, secret)
    with httpx.Client(headers=h) as http:
        codes = [http.post(emulator.url + "/v1.0/card/instances", json=_card_body(f"qps-{client_id}-{i}")).status_code
                 for i in range(10)]
        other_api = http.put(emulator.url + "/v1.0/card/streaming", json={
            "outTrackId": f"qps-{client_id}-0", "guid": "g", "key": "content", "content": "x", "isFull": True})
    assert codes.count(200) == 5 and codes.count(403) == 5
    assert other_api.status_code == 200  # the budget is per API
    calls = httpx.get(emulator.url + "/sandbox/calls", params={"path": "/v1.0/card/instances"}).json()
    assert any(c["answer"].get("code") == "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi" for c in calls)
    time.sleep(1.0)
    with httpx.Client(headers=h) as http:
        assert http.post(emulator.url + "/v1.0/card/instances", json=_card_body(f"qps-{client_id}-x")).status_code == 200


def test_injected_5xx_and_latency(emulator, app) -> None:
    h = _token(emulator, *app)
    httpx.post(emulator.url + "/sandbox/faults", json={"api": "/v1.0/card/instances", "status": 503,
                                                       "code": "ServiceUnavailable", "count": 2})
    codes = [httpx.post(emulator.url + "/v1.0/card/instances", json=_card_body(f"f5-{app[0]}-{i}"),
                        headers=h).status_code for i in range(3)]
    assert codes == [503, 503, 200]
    httpx.post(emulator.url + "/sandbox/faults", json={"api": "/v1.0/card/instances", "status": 0, "latency_s": 0.4})
    started = time.monotonic()
    assert httpx.post(emulator.url + "/v1.0/card/instances", json=_card_body(f"lat-{app[0]}"), headers=h).status_code == 200
    assert time.monotonic() - started >= 0.4
    httpx.delete(emulator.url + "/sandbox/faults")


def test_robot_sends_and_session_webhook(emulator, app) -> None:
    h = _token(emulator, *app)
    sent = send(emulator, app[0], "hi", user="staff555")
    webhook = sent["data"]["sessionWebhook"]
    assert httpx.post(webhook, json={"msgtype": "markdown", "markdown": {"title": "t", "text": "**x**"}}).json() == \
        {"errcode": 0, "errmsg": "ok"}
    r = httpx.post(emulator.url + "/v1.0/robot/oToMessages/batchSend", headers=h, json={
        "robotCode": app[0], "userIds": ["staff555"], "msgKey": "sampleMarkdown",
        "msgParam": json.dumps({"title": "t", "text": "from the API"})})
    assert r.status_code == 200 and r.json()["processQueryKey"]
    r = httpx.post(emulator.url + "/v1.0/robot/groupMessages/send", headers=h, json={
        "robotCode": app[0], "openConversationId": "cidG", "msgKey": "sampleText", "msgParam": '{"content": "g"}'})
    assert r.status_code == 200
    r = httpx.post(emulator.url + "/v1.0/robot/groupMessages/send", headers=h, json={
        "robotCode": app[0], "openConversationId": "cidG", "msgKey": "sampleText", "msgParam": "not json"})
    assert r.status_code == 400
    replies = httpx.get(emulator.url + "/sandbox/replies", params={"conversation_id": sent["conversationId"]}).json()
    assert [r["via"] for r in replies] == ["sessionWebhook", "robot.oToMessages"]
    assert httpx.post(webhook, content=b"x" * 20001).json()["errcode"] != 0
    httpx.post(emulator.url + "/sandbox/webhooks/expire")
    assert httpx.post(webhook, json={"msgtype": "text", "text": {"content": "late"}}).json()["errcode"] == 300001


def test_call_log_is_timestamped(emulator, app) -> None:
    h = _token(emulator, *app)
    since = time.time()
    httpx.post(emulator.url + "/v1.0/card/instances", json=_card_body(f"log-{app[0]}"), headers=h)
    calls = httpx.get(emulator.url + "/sandbox/calls", params={"since": since}).json()
    assert any(c["path"] == "/v1.0/card/instances" and c["time"] >= since and c["app"] == app[0] for c in calls)
    assert all(app[1] not in json.dumps(c) for c in httpx.get(emulator.url + "/sandbox/calls").json())


def test_dm_cards_belong_to_the_app_that_sent_them(emulator) -> None:
    """Two apps, one user: each app's card lands in its own DM with that user."""
    first, second = new_app(emulator), new_app(emulator)
    for app in (first, second):
        sent = send(emulator, app[0], "hi", user="shared-user")
        h = _token(emulator, *app)
        body = {**_card_body(f"dm-{app[0]}"), "openSpaceId": "dtv1.card//IM_ROBOT.shared-user"}
        assert httpx.post(emulator.url + "/v1.0/card/instances/createAndDeliver", json=body, headers=h).status_code == 200
        cards = httpx.get(emulator.url + "/sandbox/cards", params={"conversation_id": sent["conversationId"]}).json()
        assert [c["outTrackId"] for c in cards] == [f"dm-{app[0]}"]
