"""The builder returns a whole connector (nothing left to fill in later); the health server reports what it is
given, without knowing the app."""

from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient

from connector.app import ConnectorApp, Intake, build_app
from connector.core.messages import BUSY, RESTARTING
from connector.core.model import ModelClient
from connector.health import create_health_app
from connector.metrics import ConnectorMetrics
from connector.settings import ConnectorSettings
from connector.types import IncomingMessage


def test_build_app_returns_every_part() -> None:
    async def build() -> ConnectorApp:
        app = build_app(ConnectorSettings(client_id="app", client_secret="secret-appsecret", redis_url=None))
        await app.http.aclose()
        return app

    app = asyncio.run(build())
    assert app.redis is None  # no redis_url: memory stores
    assert [s.name for s in app.skills] == ["help", "files", "reset", "status", "quota"]
    assert isinstance(app.services.model, ModelClient)
    facts = app.health()
    assert facts["stream"] == "disconnected" and facts["redis"] == "none"
    assert facts["audit"] == {"store": "sqlite", "state": "stopped", "queued": 0, "spilled": False}  # not started
    assert (facts["backlog"], facts["in_flight"]) == (0, 0)
    assert set(facts["skills"]) == {"help", "files", "reset", "status", "quota"}
    assert b"connector_backlog 0.0" in app.metrics.render()


def test_the_health_server_reports_what_it_is_given() -> None:
    facts = {"status": "ok", "stream": "disconnected"}
    client = TestClient(create_health_app(lambda: facts, lambda: b"metric 1\n"))
    assert client.get("/health").json() == facts
    assert client.get("/ready").status_code == 503
    facts["stream"] = "connected"
    assert client.get("/ready").status_code == 200
    assert client.get("/metrics").content == b"metric 1\n"


class FullDispatcher:
    def submit(self, message: IncomingMessage) -> bool:
        return False

    def pending(self, message_id: str) -> bool:
        return False


def test_a_refused_message_gets_busy_then_restarting_once_stopping() -> None:
    message = IncomingMessage(platform="test", message_id="m", delivery_id="d", conversation_id="c",
                              conversation_kind="dm", sender_id="u", sender_name="u", text="hi", msgtype="text")
    sent: list[str] = []

    async def notify(msg: IncomingMessage, text: str) -> None:
        sent.append(text)

    async def go() -> None:
        intake = Intake(FullDispatcher(), ConnectorMetrics(), notify)  # type: ignore[arg-type]
        intake.on_message(message)
        await intake.settle()
        intake.stopping.set()
        intake.on_message(message)
        await intake.settle()

    asyncio.run(go())
    assert sent == [BUSY(), RESTARTING()]


def test_a_message_refused_for_a_full_backlog_and_redelivered_gets_one_busy_notice() -> None:
    """As a shed one: the busy notice is its answer (recorded in the dedup store), its redeliveries get nothing
    more; once stopping, a refusal is not recorded (the redelivery after the restart is answered)."""
    from connector.core.middleware import dedup_key
    from connector.core.store import MemoryDedupStore

    sent: list[str] = []

    async def notify(msg: IncomingMessage, text: str) -> None:
        sent.append(f"{msg.message_id}:{text}")

    def message(mid: str, delivery: str) -> IncomingMessage:
        return IncomingMessage(platform="test", message_id=mid, delivery_id=delivery, conversation_id="c",
                               conversation_kind="dm", sender_id="u", sender_name="u", text="hi", msgtype="text")

    async def go() -> ConnectorMetrics:
        store = MemoryDedupStore(60)

        async def sighted(msg: IncomingMessage) -> bool:
            return await store.first_sighting(dedup_key(msg))

        metrics = ConnectorMetrics()
        intake = Intake(FullDispatcher(), metrics, notify, sighted=sighted)  # type: ignore[arg-type]
        for delivery in ("d1", "d1-again", "d1-third"):
            intake.on_message(message("m1", delivery))
            await intake.settle()
        intake.stopping.set()
        for delivery in ("d2", "d2-again"):
            intake.on_message(message("m2", delivery))
            await intake.settle()
        return metrics

    metrics = asyncio.run(go())
    assert sent == [f"m1:{BUSY()}", f"m2:{RESTARTING()}", f"m2:{RESTARTING()}"]
    text = metrics.render()
    assert b"connector_refused_total 3.0" in text and b"connector_duplicates_total 2.0" in text


def test_outcomes_and_denied_documents_are_counted() -> None:
    from connector.app import count_outcome
    from connector.core.trail import Trail
    from connector.metrics import ConnectorMetrics
    from connector.types import IncomingMessage

    metrics = ConnectorMetrics()
    count = count_outcome(metrics)
    message = IncomingMessage(platform="test", message_id="m", delivery_id="d", conversation_id="c",
                              conversation_kind="dm", sender_id="u", sender_name="u", text="x", msgtype="text")
    answered = Trail(message)
    answered.denied = ["finance/budget.md", "hr/salaries.md"]
    denied = Trail(message)
    denied.refuse("denied", "user_not_allowed")
    count(answered)
    count(denied)
    text = metrics.render().decode()
    assert 'connector_messages_handled_total{outcome="answered"} 1.0' in text
    assert 'connector_messages_handled_total{outcome="denied"} 1.0' in text
    assert 'connector_messages_handled_total{outcome="failed"} 0.0' in text
    assert "connector_documents_denied_total 2.0" in text


def test_without_cards_only_a_long_wait_gets_a_notice() -> None:
    """No card permission: the sink cannot acknowledge. A short wait sends nothing extra; a long one sends one
    text notice with the position and the expected wait (from the measured service rate)."""
    from connector.core.capacity import ServiceRate
    from connector.core.dispatcher import Dispatcher
    from connector.core.messages import QUEUED_LONG
    from connector.intake import wait_in_words

    class NoCards:
        def acknowledge(self, message, ahead):
            return None

        def release(self, message):
            pass

    now = [0.0]
    rate = ServiceRate(min_samples=1, clock=lambda: now[0])
    for _ in range(2):  # two answers in 20 busy seconds: 0.1 per second
        rate.started()
        now[0] += 10
        rate.finished()
    sent: list[tuple[str, str]] = []

    async def notify(msg: IncomingMessage, text: str) -> None:
        sent.append((msg.message_id, text))

    def msg(n: int) -> IncomingMessage:
        return IncomingMessage(platform="test", message_id=f"m{n}", delivery_id=f"d{n}", conversation_id=f"c{n}",
                               conversation_kind="dm", sender_id=f"u{n}", sender_name="u", text="hi", msgtype="text")

    async def go(notice_after_s: float) -> None:
        release = asyncio.Event()

        async def handler(message: IncomingMessage) -> None:
            await release.wait()

        dispatcher = Dispatcher(handler, max_in_flight=1, max_backlog=10, rate=rate)
        metrics = ConnectorMetrics()
        intake = Intake(dispatcher, metrics, notify, sink=NoCards(), notice_after_s=notice_after_s)  # type: ignore[arg-type]
        for n in range(3):  # m0 runs; m1 waits for it (10 s expected), m2 for both (20 s)
            intake.on_message(msg(n))
            await asyncio.sleep(0)
        await intake.settle()
        release.set()
        await dispatcher.drain(5)
        if notice_after_s:
            assert b"connector_queue_notices_total 1.0" in metrics.render()

    asyncio.run(go(15))
    assert sent == [("m2", QUEUED_LONG(ahead=1, wait=wait_in_words(20)))]
    sent.clear()
    asyncio.run(go(0))  # 0: never
    assert sent == []


def test_a_shed_message_redelivered_gets_one_busy_notice() -> None:
    """The busy notice is the shed message's answer: its redeliveries (shed again) get nothing more."""
    from connector.core.capacity import ServiceRate, Shedding
    from connector.core.dispatcher import Dispatcher
    from connector.core.middleware import dedup_key
    from connector.core.store import MemoryDedupStore

    now = [0.0]
    rate = ServiceRate(min_samples=1, clock=lambda: now[0])
    rate.started()
    now[0] += 100
    rate.finished()  # one answer in 100 busy seconds: any wait is long
    sent: list[str] = []

    async def notify(msg: IncomingMessage, text: str) -> None:
        sent.append(msg.message_id)

    async def go() -> ConnectorMetrics:
        release = asyncio.Event()

        async def handler(message: IncomingMessage) -> None:
            await release.wait()

        store = MemoryDedupStore(60)

        async def sighted(message: IncomingMessage) -> bool:
            return await store.first_sighting(dedup_key(message))

        dispatcher = Dispatcher(handler, max_in_flight=1, max_backlog=10, rate=rate)
        metrics = ConnectorMetrics()
        intake = Intake(dispatcher, metrics, notify, shedding=Shedding(5, rate), sighted=sighted)  # type: ignore[arg-type]
        busy = IncomingMessage(platform="test", message_id="m0", delivery_id="d0", conversation_id="c0",
                               conversation_kind="dm", sender_id="u0", sender_name="u", text="hi", msgtype="text")
        intake.on_message(busy)  # runs: the box is now busy
        for delivery in ("d1", "d1-again"):  # m1, then its redelivery: both shed
            intake.on_message(IncomingMessage(platform="test", message_id="m1", delivery_id=delivery,
                                              conversation_id="c1", conversation_kind="dm", sender_id="u1",
                                              sender_name="u", text="hi", msgtype="text"))
            await intake.settle()
        release.set()
        await dispatcher.drain(5)
        return metrics

    metrics = asyncio.run(go())
    assert sent == ["m1"]  # one busy notice
    text = metrics.render()
    assert b"connector_shed_total 1.0" in text and b"connector_duplicates_total 1.0" in text
