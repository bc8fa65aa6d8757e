"""When the box is busy (#20), end to end: the emulator, the connector process, the real inference server.

Two askers in one group (per-sender context) are answered side by side while one asker's messages keep their
order; a waiting message's card shows its queue position at once and then the answer, within the card budget;
with a tiny expected-wait limit, messages beyond it get the busy notice at once, counted."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from ..servers import ServerProcess, scrape
from .conftest import connector_process, start_connector
from .helpers import cards_of, finalized, replies_of
from .sandbox.helpers import new_app, send, wait_for

pytestmark = pytest.mark.slow

LONG = "Write a long, detailed story about a dragon who learns to bake bread, with many chapters."


def created_cards(emulator, client_id: str) -> dict[str, dict]:
    """outTrackId -> the createAndDeliver body (who it was for, what it showed first)."""
    calls = httpx.get(emulator.url + "/sandbox/calls", params={"path": "/v1.0/card/instances/createAndDeliver"}).json()
    return {c["body"]["outTrackId"]: c["body"] for c in calls if c["app"] == client_id and c["status"] == 200}


def cards_for(emulator, client_id: str, conversation: str, sender: str) -> tuple[list[dict], list[dict]]:
    """The sender's cards in a group: those created at once (work started) and those created queued."""
    bodies = created_cards(emulator, client_id)
    mine = [(c, bodies[c["outTrackId"]]) for c in sorted(cards_of(emulator, conversation), key=lambda c: c["created"])
            if sender in (bodies[c["outTrackId"]].get("imGroupOpenDeliverModel") or {}).get("atUserIds", {})]
    queued = [c for c, body in mine if "排队中" in " ".join(body["cardData"]["cardParamMap"].values())]
    return [c for c, _ in mine if c not in queued], queued


def test_group_askers_side_by_side_one_askers_messages_in_order_queued_card_then_answer(
        emulator, inference: ServerProcess, log_dir: Path) -> None:
    client_id, secret = new_app(emulator)
    connector = start_connector(connector_process("connector-queue", emulator=emulator, client_id=client_id,
                                                  secret=secret, model_url=inference.url + "/v1", max_tokens=160,
                                                  card_qps=8, queue_refresh_s=0.5),
                                log_dir, emulator, client_id)
    group = f"cidQueue{uuid.uuid4().hex[:8]}"
    try:
        send(emulator, client_id, LONG, user="alice", group=group, at_bot=True)
        send(emulator, client_id, "What is the capital of France?", user="alice", group=group, at_bot=True)
        send(emulator, client_id, "Name a colour.", user="bob", group=group, at_bot=True)
        finalized(emulator, group, 3, timeout=240)
        (alice1,), (alice2,) = cards_for(emulator, client_id, group, "alice")  # one at once, one queued
        (bob,), bob_queued = cards_for(emulator, client_id, group, "bob")
        assert not bob_queued  # bob's question started at once
        # bob did not wait behind alice's long answer: his answer started before hers was finished
        assert bob["firstStreamAt"] < alice1["finalizedAt"], (bob, alice1)
        # alice's second question waited for her first (one context, in order) ...
        assert alice2["firstStreamAt"] >= alice1["finalizedAt"]
        # ... and its card said so at once, then showed the answer
        first_shown = " ".join(created_cards(emulator, client_id)[alice2["outTrackId"]]["cardData"]["cardParamMap"]
                               .values())
        assert "排队中，前面还有 0 条" in first_shown and "Queued, 0 ahead of you" in first_shown
        assert alice2["created"] < alice1["finalizedAt"]  # the queued card came before her turn
        answer = " ".join(alice2["texts"].values())
        assert "排队中" not in answer and answer.strip()
        assert not any(c["error"] for c in (alice1, alice2, bob))
    finally:
        connector.stop()
    calls = [c for c in httpx.get(emulator.url + "/sandbox/calls").json()
             if c["app"] == client_id and c["path"].startswith("/v1.0/card/")]
    per_second = Counter(int(c["time"]) for c in calls)
    assert max(per_second.values()) <= 8  # within the app-wide card budget (card_qps)


def test_queued_positions_count_down_and_shedding_answers_at_once(emulator, inference: ServerProcess,
                                                                  log_dir: Path) -> None:
    client_id, secret = new_app(emulator)
    connector = start_connector(connector_process("connector-shed", emulator=emulator, client_id=client_id,
                                                  secret=secret, model_url=inference.url + "/v1", max_in_flight=1,
                                                  max_tokens=48, queue_refresh_s=0.3, max_expected_wait_s=1),
                                log_dir, emulator, client_id)
    try:
        warm = [send(emulator, client_id, f"Say hello number {n}.", user=f"w{n}")["conversationId"] for n in range(3)]
        for conversation in warm:  # three answers: the service rate is measured
            finalized(emulator, conversation, 1, timeout=120)
        users = [f"s{uuid.uuid4().hex[:6]}" for _ in range(6)]
        conversations = [send(emulator, client_id, LONG, user=user)["conversationId"] for user in users]

        def outcome(conversation: str) -> str:
            if any("预计需要等待约" in (r["content"].get("text") or "") for r in replies_of(emulator, conversation)):
                return "shed"
            cards = cards_of(emulator, conversation)
            return "answered" if cards and cards[0]["finalized"] else ""

        outcomes = wait_for(lambda: all(o := [outcome(c) for c in conversations]) and o, timeout=240)
        assert outcomes[0] == "answered"  # the first started at once
        assert "shed" in outcomes  # the expected wait of those behind it exceeded 1 s
        shed_reply = next(r for c in conversations for r in replies_of(emulator, c)
                          if "预计需要等待约" in (r["content"].get("text") or ""))["content"]["text"]
        assert "Many people are asking right now: the expected wait is about" in shed_reply
        samples = scrape(connector.url)
        assert samples["connector_shed_total"] == outcomes.count("shed")
        assert all(len(cards_of(emulator, c)) == (1 if o == "answered" else 0) for c, o in zip(conversations, outcomes))
    finally:
        connector.stop()
