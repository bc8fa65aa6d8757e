"""Prometheus metrics of the connector (own registry: nothing global at import)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 40.0, 80.0)


class ConnectorMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter("connector_messages_received", "Messages received from the IM.", ["msgtype"],
                                registry=r)
        self.replies = Counter("connector_replies", "Replies sent, by path.", ["path"], registry=r)
        self.errors = Counter("connector_errors", "Errors, by kind.", ["kind"], registry=r)
        self.duplicates = Counter("connector_duplicates", "Redelivered messages ignored.", registry=r)
        self.rate_limited = Counter("connector_rate_limited", "Messages refused by the per-user limit.", registry=r)
        self.refused = Counter("connector_refused", "Messages refused because the backlog was full.", registry=r)
        self.shed = Counter("connector_shed", "Messages answered at once with a busy notice because their expected "
                            "wait exceeded max_expected_wait_s.", registry=r)
        self.queue_notices = Counter("connector_queue_notices", "Text notices of a long expected wait, sent where no "
                                     "queued card could be shown (no card permission).", registry=r)
        self.outcomes = Counter("connector_messages_handled", "Messages handled, by outcome (answered, failed, "
                                "refused, rate_limited, denied: as in the audit record).", ["outcome"], registry=r)
        self.documents_denied = Counter("connector_documents_denied", "Documents the access rules left out of "
                                        "answers (each also in the message's audit record).", registry=r)
        self.quota = Counter("connector_quota", "Daily quota checks, by outcome (allowed, refused, exempt).",
                             ["outcome"], registry=r)
        self.api_calls = Counter("connector_api_calls", "DingTalk API calls (card calls included), by outcome.",
                                 ["api", "outcome"], registry=r)
        self.skill_results = Counter("connector_skill_results", "What skills did with messages (answer, augment, "
                                     "error), by skill.", ["skill", "outcome"], registry=r)
        self.reconnects = Counter("connector_stream_reconnects", "Stream reconnections.", registry=r)
        self.audit_records = Counter("connector_audit_records", "Audit records, by result: written to the store, "
                                     "spilled to the local file (queue full or store failing), replayed from it "
                                     "into the chain.", ["result"], registry=r)
        self.audit_write_failures = Counter("connector_audit_write_failures", "Failed writes to the audit store "
                                            "(the records were spilled, not lost).", registry=r)
        for result in ("written", "spilled", "replayed"):  # zeros from the start, for the alert and dashboard
            self.audit_records.labels(result)
        self.alert_notifications = Counter("connector_alert_notifications", "Alertmanager notifications on POST "
                                           "/alerts, by outcome: sent to the ops group, merged (held for the rate "
                                           "limit), summary (a merged message sent), failed, refused (bad token).",
                                           ["outcome"], registry=r)
        self.to_first_card_call = Histogram("connector_message_to_first_card_call_seconds",
                                            "Message receipt to the card's first API call.", buckets=LATENCY,
                                            registry=r)
        self.to_first_token = Histogram("connector_message_to_first_token_seconds",
                                        "Message receipt to the first answer text shown in the card.",
                                        buckets=LATENCY, registry=r)
        self.to_final = Histogram("connector_message_to_final_seconds", "Message receipt to the final reply.",
                                  buckets=LATENCY, registry=r)

    def gauges(self, *, backlog: Callable[[], int], in_flight: Callable[[], int], connected: Callable[[], bool],
               redis_up: Callable[[], float]) -> None:
        r = self.registry
        Gauge("connector_backlog", "Messages accepted and not yet started.", registry=r).set_function(backlog)
        Gauge("connector_in_flight", "Messages being answered.", registry=r).set_function(in_flight)
        Gauge("connector_stream_connected", "1 while the Stream connection is open.",
              registry=r).set_function(lambda: 1.0 if connected() else 0.0)
        Gauge("connector_redis_up", "1 Redis answers, 0 down, -1 not configured.", registry=r).set_function(redis_up)

    def render(self) -> bytes:
        return generate_latest(self.registry)
