"""The audit writer inside the connector: build_app makes it a trail consumer, messages refused at intake are
recorded, and switching it off leaves none."""

from __future__ import annotations

import asyncio

from connector.app import ConnectorApp, build_app
from connector.audit.sqlite_store import SqliteStore
from connector.settings import ConnectorSettings

from .helpers import message


def build(**settings) -> ConnectorApp:
    async def go() -> ConnectorApp:
        app = build_app(ConnectorSettings(client_id="app", client_secret="secret-appsecret", **settings))
        await app.http.aclose()
        return app

    return asyncio.run(go())


def test_build_app_wires_the_writer(tmp_path) -> None:
    app = build(audit_path=str(tmp_path / "a.sqlite3"), audit_spill_path=str(tmp_path / "s.jsonl"),
                audit_content="hash", audit_queue_size=7)
    assert app.audit is not None and app.audit.recorder.content == "hash" and app.audit.queue.maxsize == 7
    assert app.audit.store.name == "sqlite"
    text = app.metrics.render().decode()
    assert 'connector_audit_records_total{result="spilled"} 0.0' in text
    assert "connector_audit_write_failures_total 0.0" in text
    assert build(audit_enabled=False).audit is None


class FullDispatcher:
    def submit(self, message) -> bool:
        return False

    def pending(self, message_id: str) -> bool:
        return False


def test_a_message_refused_at_intake_is_recorded(tmp_path) -> None:
    """build_app's own intake: the backlog is full (a seam), the message never reaches the pipeline."""
    path = tmp_path / "a.sqlite3"

    async def go() -> ConnectorApp:
        app = build_app(ConnectorSettings(client_id="app", client_secret="secret-appsecret", audit_path=str(path),
                                          audit_spill_path=str(tmp_path / "s.jsonl"),
                                          openapi_endpoint="http://127.0.0.1:9"))
        app.intake.dispatcher = FullDispatcher()  # type: ignore[assignment]
        app.intake.on_message(message("hello?"))
        await app.intake.settle()  # its busy refusal is recorded first
        app.intake.stopping.set()
        app.intake.on_message(message("still there?"))
        await app.intake.settle()  # the busy notices (undeliverable here: only logged)
        await app.http.aclose()
        return app

    app = asyncio.run(go())
    assert app.audit is not None
    app.audit.start()
    app.audit.stop()
    rows = [r.record() for r in SqliteStore(path).rows()]
    assert [(r.question, r.outcome, r.reason) for r in rows] == [("hello?", "refused", "busy"),
                                                                ("still there?", "refused", "restarting")]
    assert rows[0].answer == "" and rows[0].sender_id == "staff1" and rows[0].delivery == ""
