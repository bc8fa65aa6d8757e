"""AI card instances: create, deliver, update, stream (DingTalk card OpenAPI semantics)."""

from __future__ import annotations

import time
from typing import Any

from .state import (FLOW_FAILED, FLOW_FINISHED, FLOW_INPUTTING, App, Card, OpenApiError, Sandbox)


def _param_map(body: dict[str, Any]) -> dict[str, str]:
    card_data = body.get("cardData") or {}
    if not isinstance(card_data, dict):
        raise OpenApiError(400, "param.invalid", "cardData must be an object")
    params = card_data.get("cardParamMap") or {}
    if not isinstance(params, dict):
        raise OpenApiError(400, "param.invalid", "cardParamMap must be an object")
    bad = [k for k, v in params.items() if not isinstance(v, str)]
    if bad:
        raise OpenApiError(400, "param.invalid", f"cardParamMap values must be strings: {', '.join(sorted(bad))}")
    return dict(params)


def _require(body: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if not body.get(n)]
    if missing:
        raise OpenApiError(400, "MissingParameter", f"missing parameter: {', '.join(missing)}")


def create(sandbox: Sandbox, app: App, body: dict[str, Any]) -> Card:
    _require(body, "cardTemplateId", "outTrackId")
    template = body["cardTemplateId"]
    published = app.templates.get(template)
    if published is None:
        raise OpenApiError(400, "param.templateNotFound", f"card template {template} does not exist for this app")
    if not published:
        raise OpenApiError(400, "param.templateUnpublished", f"card template {template} is not published")
    out_track_id = body["outTrackId"]
    if out_track_id in sandbox.cards:
        raise OpenApiError(400, "param.outTrackIdDuplicated", f"outTrackId {out_track_id} already exists")
    params = _param_map(body)
    card = Card(out_track_id=out_track_id, app=app, template_id=template, params=params)
    if "flowStatus" in params:
        card.flow_status = params["flowStatus"]
    sandbox.cards[out_track_id] = card
    return card


def _card(sandbox: Sandbox, app: App, out_track_id: str | None) -> Card:
    card = sandbox.cards.get(out_track_id or "")
    if card is None or card.app is not app:
        raise OpenApiError(400, "param.cardNotExist", f"card {out_track_id} does not exist")
    return card


def deliver(sandbox: Sandbox, app: App, body: dict[str, Any]) -> list[dict[str, Any]]:
    _require(body, "outTrackId", "openSpaceId")
    card = _card(sandbox, app, body["outTrackId"])
    results = []
    for space in str(body["openSpaceId"]).split(";"):
        if not space.startswith("dtv1.card//"):
            raise OpenApiError(400, "param.openSpaceIdInvalid", f"openSpaceId {space} is invalid")
        kind, _, space_id = space.removeprefix("dtv1.card//").partition(".")
        if kind == "IM_ROBOT" and "imRobotOpenDeliverModel" not in body:
            raise OpenApiError(400, "MissingParameter", "imRobotOpenDeliverModel is required for IM_ROBOT")
        if kind == "IM_GROUP" and "imGroupOpenDeliverModel" not in body:
            raise OpenApiError(400, "MissingParameter", "imGroupOpenDeliverModel is required for IM_GROUP")
        if kind not in ("IM_ROBOT", "IM_GROUP") or not space_id:
            raise OpenApiError(400, "param.openSpaceIdInvalid", f"openSpaceId {space} is invalid")
        card.spaces.append(space)
        conversation_id = space_id if kind == "IM_GROUP" else _dm_conversation(app, space_id)
        card.conversation_id = conversation_id
        conv = sandbox.conversations.get(conversation_id or "")
        if conv is not None:
            conv.timeline.append({"kind": "card", "time": time.time(), "outTrackId": card.out_track_id})
        results.append({"spaceType": kind, "spaceId": space_id, "success": True})
    return results


def _dm_conversation(app: App, staff_id: str) -> str:
    """The DM between this app's robot and this user (two apps' DMs with one user are different)."""
    from .messages import dm_conversation_id

    return dm_conversation_id(app, staff_id)


def update(sandbox: Sandbox, app: App, body: dict[str, Any]) -> None:
    card = _card(sandbox, app, body.get("outTrackId"))
    params = _param_map(body)
    by_key = bool((body.get("cardUpdateOptions") or {}).get("updateCardDataByKey"))
    # a key that is streaming ignores regular updates until it is finalized
    params = {k: v for k, v in params.items() if k not in card.streaming_keys}
    if by_key:
        card.params.update(params)
    else:
        card.params = {**{k: v for k, v in card.params.items() if k in card.streaming_keys}, **params}
    if "flowStatus" in params:
        card.flow_status = params["flowStatus"]
        if params["flowStatus"] in (FLOW_FINISHED, FLOW_FAILED):
            card.finalized = True
            card.finalized_at = card.finalized_at or time.time()
    for key, value in params.items():
        if key != "flowStatus":
            card.texts[key] = value
    card.updates += 1


def stream(sandbox: Sandbox, app: App, body: dict[str, Any]) -> None:
    _require(body, "outTrackId", "guid", "key")
    card = _card(sandbox, app, body["outTrackId"])
    key = body["key"]
    if card.finalized and key not in card.streaming_keys:
        raise OpenApiError(400, "param.cardFinalized", "the card has been finalized and can no longer be updated")
    if key in card.streaming_keys and card.finalized:
        raise OpenApiError(400, "param.cardFinalized", "the card has been finalized and can no longer be updated")
    content = body.get("content") or ""
    if not isinstance(content, str):
        raise OpenApiError(400, "param.invalid", "content must be a string")
    if card.first_stream_at is None:
        card.first_stream_at = time.time()
    card.streaming_keys.add(key)
    card.texts[key] = content if body.get("isFull", True) else card.texts.get(key, "") + content
    card.updates += 1
    if body.get("isError"):
        card.flow_status, card.error, card.finalized = FLOW_FAILED, True, True
        card.finalized_at = time.time()
    elif body.get("isFinalize"):
        card.flow_status, card.finalized = FLOW_FINISHED, True
        card.finalized_at = time.time()
    else:
        card.flow_status = FLOW_INPUTTING
