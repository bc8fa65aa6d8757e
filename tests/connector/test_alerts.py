"""Alertmanager's notifications (connector/alerts.py) and POST /alerts (connector/health.py): the v4 payload, the
bilingual message with value and runbook, the per-minute limit with the rest merged and counted, the bearer token
(401 without or with a wrong one, never logged). The sender is a seam here; tests/connector/dingtalk/
test_opsgroup.py and test_alerts_end_to_end.py send for real."""

from __future__ import annotations

import asyncio
import logging

import pytest
from fastapi.testclient import TestClient

from connector.alerts import AlertRelay, Notification, format_notification
from connector.health import create_health_app

TOKEN = "alerts-token-0123456789abcdef"


def payload(status: str = "firing", *names: str, value: str = "0") -> dict:
    names = names or ("InferenceDown",)
    return {
        "version": "4", "groupKey": f'{{}}:{{alertname="{names[0]}"}}', "truncatedAlerts": 0, "status": status,
        "receiver": "dingtalk-ops", "groupLabels": {"alertname": names[0]},
        "commonLabels": {"alertname": names[0], "severity": "critical"}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{"status": status, "labels": {"alertname": n, "severity": "critical", "instance": "127.0.0.1:8000"},
                    "annotations": {"summary": "The inference server does not answer", "value": value,
                                    "runbook": "systemctl status appliance-inference; journalctl -u appliance-inference"},
                    "startsAt": "2026-01-02T03:04:05Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus/graph", "fingerprint": "abc"} for n in names]}


class Sent:
    def __init__(self, fail: int = 0) -> None:
        self.messages: list[tuple[str, str]] = []
        self.fail = fail

    async def send(self, title: str, markdown: str) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("errcode 130101")
        self.messages.append((title, markdown))


def test_format_firing_and_resolved_in_both_languages() -> None:
    title, text = format_notification(Notification.model_validate(payload("firing")))
    assert title == "运维告警 / Ops alert InferenceDown"
    assert "🔥 告警 / FIRING: InferenceDown (1)" in text
    assert "**InferenceDown** [critical] @ 127.0.0.1:8000: The inference server does not answer" in text
    assert "当前值 / value: 0" in text and "处理 / runbook: systemctl status appliance-inference" in text
    assert "开始于 / since: 2026-01-02 03:04:05 UTC" in text
    _, text = format_notification(Notification.model_validate(payload("resolved")))
    assert "✅ 已恢复 / RESOLVED: InferenceDown (1)" in text and "since" not in text


def test_payload_that_is_not_v4_is_refused() -> None:
    with pytest.raises(ValueError):
        Notification.model_validate({**payload(), "version": "3"})
    with pytest.raises(ValueError):
        Notification.model_validate({**payload(), "alerts": []})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_at_most_n_a_minute_the_rest_merged_into_one_counted_summary() -> None:
    sent, counted, clock = Sent(), [], Clock()
    relay = AlertRelay(sent, 2, on_outcome=lambda outcome, n: counted.append(outcome), clock=clock)
    assert await relay.submit(Notification.model_validate(payload("firing", "A"))) == "sent"
    assert await relay.submit(Notification.model_validate(payload("firing", "B"))) == "sent"
    for name in ("C", "D", "E"):
        assert await relay.submit(Notification.model_validate(payload("firing", name, value="97"))) == "held"
    await asyncio.sleep(0.1)
    assert len(sent.messages) == 2  # the window is full
    clock.now += 60
    for _ in range(100):
        await asyncio.sleep(0.05)
        if len(sent.messages) == 3:
            break
    _, summary = sent.messages[2]
    assert "告警过多：3 条通知合并为本条摘要（每分钟最多 2 条）。" in summary
    assert "3 notifications merged into this summary (at most 2 a minute)" in summary
    assert "**C**" in summary and "**E**" in summary and "(当前值 / value: 97)" in summary
    assert counted == ["sent", "sent", "merged", "merged", "merged", "summary"]
    await relay.close()


async def test_a_failed_send_is_raised_for_alertmanager_to_retry() -> None:
    counted: list[str] = []
    relay = AlertRelay(Sent(fail=1), 5, on_outcome=lambda outcome, n: counted.append(outcome))
    with pytest.raises(RuntimeError):
        await relay.submit(Notification.model_validate(payload()))
    assert await relay.submit(Notification.model_validate(payload())) == "sent"
    assert counted == ["failed", "sent"]


def test_alerts_endpoint_needs_the_bearer_token_and_never_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    sent, refused = Sent(), []
    app = create_health_app(lambda: {"stream": "connected"}, lambda: b"", alerts_token=TOKEN,
                            alerts=AlertRelay(sent, 5), on_refused=lambda: refused.append(1))
    client = TestClient(app)
    with caplog.at_level(logging.DEBUG):
        assert client.post("/alerts", json=payload()).status_code == 401
        wrong = client.post("/alerts", json=payload(), headers={"Authorization": f"Bearer {TOKEN}x"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert client.post("/alerts", json=payload(), headers={"Authorization": TOKEN}).status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        bad = client.post("/alerts", json={"version": "4", "status": "firing"}, headers=good)
        assert bad.status_code == 400 and "Alertmanager" in bad.json()["error"]
        assert client.post("/alerts", content=b"{not json", headers=good).status_code == 400
        ok = client.post("/alerts", json=payload(), headers=good)
    assert ok.status_code == 200 and ok.json() == {"status": "sent"}
    assert len(sent.messages) == 1 and len(refused) == 3
    assert TOKEN not in caplog.text and "refused" in caplog.text


def test_without_a_token_there_is_no_alerts_endpoint() -> None:
    client = TestClient(create_health_app(lambda: {"stream": "connected"}, lambda: b""))
    assert client.post("/alerts", json=payload()).status_code in (404, 405)
