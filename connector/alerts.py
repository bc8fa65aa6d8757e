"""Alerts that reach a person: Alertmanager's webhook notifications, relayed into the DingTalk ops group.

Alertmanager posts one JSON document per group notification (webhook format version 4) to the connector's
`POST /alerts` (connector/health.py, bearer token `alerts_token`). Each one becomes one markdown message in
Chinese and English (texts in core/messages.py): firing or resolved, per alert its summary, the value and
the runbook line from the rule's annotations. At most `alerts_max_per_minute` messages go to the group in
any 60 s; notifications beyond that wait and leave together as one summary message, counted, as soon as
the window allows (DingTalk's custom robots accept 20 messages a minute and then refuse for 10 minutes).
The sending itself is an `OpsSender` (connector/dingtalk/opsgroup.py: the robot group-send API or a
group's custom robot webhook)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from .core.messages import (
    ALERT_FIRING,
    ALERT_MERGED,
    ALERT_RESOLVED,
    ALERT_RUNBOOK,
    ALERT_SINCE,
    ALERT_TITLE,
    ALERT_VALUE,
)

log = logging.getLogger("connector.alerts")

WINDOW_S = 60.0
MAX_ALERTS_SHOWN = 20  # per message; the rest are counted


class Alert(BaseModel):
    """One alert of a notification (Alertmanager webhook format v4)."""

    model_config = ConfigDict(extra="ignore")
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = ""


class Notification(BaseModel):
    """One group notification, as Alertmanager posts it to a webhook receiver."""

    model_config = ConfigDict(extra="ignore")
    version: Literal["4"]
    groupKey: str = ""
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[Alert] = Field(min_length=1)


class OpsSender(Protocol):
    """Posts one markdown message to the ops group; raises on failure (the reason in the exception)."""

    async def send(self, title: str, markdown: str) -> None: ...


def _status(status: str) -> str:
    return ("🔥 " + ALERT_FIRING()) if status == "firing" else ("✅ " + ALERT_RESOLVED())


def _alert_lines(alert: Alert) -> list[str]:
    name = alert.labels.get("alertname", "alert")
    severity = alert.labels.get("severity")
    where = alert.labels.get("instance")
    head = f"- **{name}**" + (f" [{severity}]" if severity else "") + (f" @ {where}" if where else "")
    summary = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    lines = [head + (f": {summary}" if summary else "")]
    if alert.annotations.get("description") and alert.annotations.get("summary"):
        lines.append(f"  {alert.annotations['description']}")
    if alert.annotations.get("value"):
        lines.append(f"  {ALERT_VALUE()}: {alert.annotations['value']}")
    if alert.annotations.get("runbook"):
        lines.append(f"  {ALERT_RUNBOOK()}: {alert.annotations['runbook']}")
    if alert.status == "firing" and alert.startsAt is not None:
        lines.append(f"  {ALERT_SINCE()}: {alert.startsAt.strftime('%Y-%m-%d %H:%M:%S %Z').strip()}")
    return lines


def format_notification(notification: Notification) -> tuple[str, str]:
    """One notification as (title, markdown): firing alerts first, then the resolved ones."""
    name = notification.groupLabels.get("alertname") or notification.commonLabels.get("alertname") or ""
    title = f"{ALERT_TITLE()} {name}".strip()
    lines: list[str] = []
    for status in ("firing", "resolved"):
        alerts = [a for a in notification.alerts if a.status == status]
        if not alerts:
            continue
        lines.append(f"### {_status(status)}: {name or len(alerts)} ({len(alerts)})")
        for alert in alerts[:MAX_ALERTS_SHOWN]:
            lines += _alert_lines(alert)
        hidden = len(alerts) - MAX_ALERTS_SHOWN
        if hidden > 0:
            lines.append(f"- … +{hidden}")
    if notification.truncatedAlerts:
        lines.append(f"- … +{notification.truncatedAlerts}")
    return title, "\n".join(lines)


def format_summary(held: list[Notification], limit: int) -> tuple[str, str]:
    """Notifications that waited for the rate limit, in one message: one line per alert."""
    lines = [f"### {ALERT_TITLE()}", ALERT_MERGED(count=len(held), limit=limit), ""]
    shown = 0
    for notification in held:
        for alert in notification.alerts:
            if shown == MAX_ALERTS_SHOWN:
                break
            shown += 1
            value = alert.annotations.get("value")
            lines.append(f"- {_status(alert.status)} **{alert.labels.get('alertname', 'alert')}**"
                         + (f" @ {alert.labels['instance']}" if alert.labels.get("instance") else "")
                         + (f": {alert.annotations['summary']}" if alert.annotations.get("summary") else "")
                         + (f" ({ALERT_VALUE()}: {value})" if value else ""))
    total = sum(len(n.alerts) for n in held)
    if total > shown:
        lines.append(f"- … +{total - shown}")
    return ALERT_TITLE(), "\n".join(lines)


class AlertRelay:
    """Notifications to the ops group, at most `max_per_minute` messages in any 60 s; the rest merged.

    `on_outcome(outcome, n)` counts: "sent" (a message per notification), "merged" (notifications held for
    the rate limit), "summary" (a merged message sent), "failed" (a message DingTalk did not take)."""

    def __init__(self, sender: OpsSender, max_per_minute: int,
                 on_outcome: Callable[[str, int], None] = lambda outcome, n: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sender, self.max_per_minute, self.on_outcome = sender, max_per_minute, on_outcome
        self.clock = clock
        self.sent: deque[float] = deque()
        self.held: list[Notification] = []
        self._flusher: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def _room(self) -> float:
        """0 when a message may go now, else the seconds until the window has room."""
        now = self.clock()
        while self.sent and now - self.sent[0] >= WINDOW_S:
            self.sent.popleft()
        return 0.0 if len(self.sent) < self.max_per_minute else WINDOW_S - (now - self.sent[0])

    async def submit(self, notification: Notification) -> str:
        """"sent", or "held" (it leaves in a summary). Raises when the sender fails (Alertmanager retries)."""
        async with self._lock:
            if self.held or self._room() > 0:
                self.held.append(notification)
                self.on_outcome("merged", 1)
                self._schedule()
                return "held"
            title, text = format_notification(notification)
            await self._send(title, text)
            self.on_outcome("sent", 1)
            return "sent"

    async def _send(self, title: str, text: str) -> None:
        self.sent.append(self.clock())  # a refused attempt counts too: DingTalk counts it
        try:
            await self.sender.send(title, text)
        except Exception:
            self.on_outcome("failed", 1)
            raise

    def _schedule(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_when_room())

    async def _flush_when_room(self) -> None:
        while True:
            async with self._lock:
                wait = self._room()
                if not self.held:
                    return
                if wait <= 0:
                    held, self.held = self.held, []
                    try:
                        await self._send(*format_summary(held, self.max_per_minute))
                        self.on_outcome("summary", 1)
                    except Exception as exc:  # kept for the next try: nothing accepted is lost
                        self.held = held + self.held
                        log.warning("alert summary not delivered to the ops group (%s); trying again", exc)
                        wait = 5.0
                    else:
                        return
            await asyncio.sleep(min(max(wait, 0.05), 1.0))  # looks again every second at most

    async def close(self) -> None:
        """Stop waiting for the window; held notifications are logged (Alertmanager repeats what still fires)."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self.held:
            log.warning("%d alert notifications not sent to the ops group at shutdown (rate limit)", len(self.held))
