"""Alerts end to end: the real Alertmanager (Debian's prometheus-alertmanager) posts to the real connector's
/alerts, which posts into a DingTalk group through a custom robot webhook signed with 加签; the emulator checks the
signature and shows the messages in the group's timeline. Firing, then resolved, with the value and runbook lines;
a wrong bearer token is refused. Alertmanager and the connector are stopped whatever happens."""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from ..servers import ServerProcess, free_port, scrape
from .conftest import connector_process, start_connector
from .sandbox.helpers import new_app, wait_for

pytestmark = pytest.mark.slow

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
TOKEN = f"alerts-{uuid.uuid4().hex}"
RUNBOOK = "systemctl status appliance-inference; journalctl -u appliance-inference -n 200"


def alertmanager(tmp_path: Path, connector_url: str, token_file: Path) -> ServerProcess:
    port = free_port()
    config = {
        "route": {"receiver": "dingtalk-ops", "group_by": ["alertname", "instance"], "group_wait": "1s",
                  "group_interval": "2s", "repeat_interval": "1h"},
        "receivers": [{"name": "dingtalk-ops", "webhook_configs": [{
            "url": connector_url + "/alerts", "send_resolved": True,
            "http_config": {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}}}]}]}
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "am-data").mkdir()
    return ServerProcess("alertmanager", [f"--config.file={tmp_path / 'alertmanager.yml'}",
                                          f"--storage.path={tmp_path / 'am-data'}",
                                          f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                                          "--log.level=debug"],
                         port=port, port_flag=False, python=str(ALERTMANAGER))


def post_alert(alertmanager_url: str, ends_at: datetime | None = None) -> None:
    alert = {"labels": {"alertname": "InferenceDown", "severity": "critical", "instance": "127.0.0.1:8000",
                        "job": "inference"},
             "annotations": {"summary": "The inference server does not answer", "value": "0", "runbook": RUNBOOK,
                             "description": "Prometheus cannot scrape 127.0.0.1:8000."},
             "generatorURL": "http://prometheus.local/graph"}
    if ends_at is not None:
        alert["endsAt"] = ends_at.isoformat()
    r = httpx.post(alertmanager_url + "/api/v2/alerts", json=[alert], timeout=5)
    assert r.status_code == 200, r.text


def test_firing_then_resolved_in_the_ops_group(emulator, inference: ServerProcess, log_dir: Path,
                                                tmp_path: Path) -> None:
    if ALERTMANAGER is None:
        pytest.fail("prometheus-alertmanager is not installed (make test installs it)")
    client_id, secret = new_app(emulator)
    group = f"cidops{uuid.uuid4().hex[:12]}=="
    robot_secret = f"SEC{uuid.uuid4().hex}"
    robot = httpx.post(emulator.url + "/sandbox/custom-robots",
                       json={"conversation_id": group, "title": "运维群", "secret": robot_secret}).json()
    token_file = tmp_path / "alerts-token"
    token_file.write_text(TOKEN + "\n")
    connector = start_connector(connector_process(
        "connector-alerts", emulator=emulator, client_id=client_id, secret=secret, model_url=inference.url + "/v1",
        alerts_token=TOKEN, alerts_webhook_url=robot["webhook"], alerts_webhook_secret=robot_secret),
        log_dir, emulator, client_id)
    manager = alertmanager(tmp_path, connector.url, token_file)
    try:
        manager.start(log_dir).wait_ready("/-/ready", timeout=30)

        def texts() -> list[str]:
            items = httpx.get(emulator.url + f"/sandbox/timeline/{group}").json()["items"]
            return [i["content"]["text"] for i in items if i.get("via") == "customRobot"]

        post_alert(manager.url)
        firing = wait_for(texts, timeout=30, describe=lambda: manager.log_tail() + "\n" + connector.log_tail())
        assert len(firing) == 1
        assert "🔥 告警 / FIRING: InferenceDown (1)" in firing[0]
        assert "**InferenceDown** [critical] @ 127.0.0.1:8000: The inference server does not answer" in firing[0]
        assert "当前值 / value: 0" in firing[0] and f"处理 / runbook: {RUNBOOK}" in firing[0]

        post_alert(manager.url, ends_at=datetime.now(UTC) - timedelta(seconds=1))
        both = wait_for(lambda: t if len(t := texts()) >= 2 else None, timeout=30,
                        describe=lambda: manager.log_tail() + "\n" + connector.log_tail())
        assert "✅ 已恢复 / RESOLVED: InferenceDown (1)" in both[1] and f"处理 / runbook: {RUNBOOK}" in both[1]

        wrong = httpx.post(connector.url + "/alerts", headers={"Authorization": "Bearer not-the-token"},
                           json={"version": "4", "status": "firing", "alerts": []})
        assert wrong.status_code == 401
        assert httpx.post(connector.url + "/alerts", json={}).status_code == 401
        time.sleep(0.5)
        assert len(texts()) == 2
        samples = scrape(connector.url)
        assert samples['connector_alert_notifications_total{outcome="sent"}'] == 2
        assert samples['connector_alert_notifications_total{outcome="refused"}'] == 2
        calls = httpx.get(emulator.url + "/sandbox/calls", params={"path": "/robot/send"}).json()
        # the session's emulator also logs other tests' robot posts (text ones too): only this test's two
        assert [c["answer"]["errcode"] for c in calls
                if (c["body"].get("markdown") or {}).get("text") in both] == [0, 0]
    finally:
        manager.stop(timeout=10)
        connector.stop()
    log = connector.log()
    assert TOKEN not in log and robot_secret not in log and robot["webhook"].split("=", 1)[1] not in log
