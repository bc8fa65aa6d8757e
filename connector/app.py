"""The connector process: transport -> dispatcher -> middlewares -> handler -> reply sink.

`build_app(settings)` wires every part and returns a fully formed `ConnectorApp`; `run()` starts it and stops
it cleanly on SIGTERM. `serve(settings)` does both (the entry point's coroutine)."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import __version__
from .alerts import AlertRelay
from .audit.writer import AuditWriter
from .core.capacity import Shedding
from .core.dispatcher import Dispatcher
from .core.handler import ChatHandler, HandlerHooks
from .core.identity import DirectoryCache, identity
from .core.messages import RESTARTING
from .core.middleware import (
    allowlist,
    chain,
    dedup,
    dedup_key,
    message_policy,
    rate_limit,
    trailed,
)
from .core.model import ModelClient, TokenMinter
from .core.quota import OUTCOMES as QUOTA_OUTCOMES
from .core.quota import Limits, MemoryCounters, Quota, RedisCounters, quota_limit
from .core.ratelimit import SlidingWindowLimiter
from .core.retry import RetryPolicy
from .core.store import MemoryContextStore, MemoryDedupStore, RedisStores
from .core.trail import OUTCOMES, Trail, note_delivery
from .dingtalk.directory import DingTalkDirectory
from .dingtalk.files import DingTalkFiles
from .dingtalk.openapi import DingTalkAPI
from .dingtalk.opsgroup import CustomRobotSender, RobotGroupSender
from .dingtalk.replies import DingTalkReplies, ReplyHooks
from .dingtalk.transport import StreamTransport
from .health import serve_health
from .intake import Intake
from .metrics import ConnectorMetrics
from .settings import ConnectorSettings
from .skills.base import Skill, SkillError, SkillServices
from .skills.knowledge_base import SharedEmbedder
from .skills.registry import load_enabled
from .types import IncomingMessage

log = logging.getLogger("connector")

Notify = Callable[[IncomingMessage, str], Awaitable[None]]


def notifier(replies: DingTalkReplies, metrics: ConnectorMetrics) -> Notify:
    """A short notice to the sender (busy, not allowed, too long...); one that cannot be sent is only logged."""

    async def notify(message: IncomingMessage, text: str) -> None:
        try:
            await replies.send_text(message, text)
        except Exception as exc:  # a notice that cannot be sent is logged, never fatal
            metrics.errors.labels("notice").inc()
            log.warning("notice to %s not delivered: %s", message.message_id, type(exc).__name__)

    return notify


@dataclass
class ConnectorApp:
    """Every part of a running connector, all present: made by `build_app`."""

    settings: ConnectorSettings
    metrics: ConnectorMetrics
    http: httpx.AsyncClient
    redis: RedisStores | None  # None when no redis_url is set: context and dedup are kept in memory
    replies: DingTalkReplies
    skills: list[Skill]
    services: SkillServices
    dispatcher: Dispatcher
    intake: Intake
    transport: StreamTransport
    audit: AuditWriter | None = None  # None when audit_enabled is off
    model_http: httpx.AsyncClient | None = None  # the model's own client (a private CA); None: shares `http`
    alerts: AlertRelay | None = None  # Alertmanager's notifications to the ops group; None: alerts_token unset
    started_at: float = field(default_factory=time.time)

    def request_stop(self) -> None:
        self.intake.stopping.set()

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "version": __version__,
                "stream": "connected" if self.transport.connected else "disconnected",
                "redis": "none" if self.redis is None else ("up" if self.redis.up else "down"),
                "audit": "off" if self.audit is None else self.audit.status(),
                "backlog": self.dispatcher.backlog,
                "in_flight": self.dispatcher.in_flight,
                "skills": {skill.name: skill.status() for skill in self.skills},
                "uptime_s": round(time.time() - self.started_at, 1)}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop)
            except (NotImplementedError, RuntimeError):
                pass
        health_server = await serve_health(
            self.health, self.metrics.render, self.settings.health_host, self.settings.health_port,
            alerts_token=self.settings.alerts_token.get_secret_value() if self.settings.alerts_token else None,
            alerts=self.alerts, on_refused=lambda: self.metrics.alert_notifications.labels("refused").inc())
        for skill in self.skills:
            try:
                await skill.start(self.services)
            except SkillError:
                raise
            except Exception as exc:
                raise SkillError(f"skill {skill.name!r} failed to start: {type(exc).__name__}: {exc}") from exc
        log.info("skills: %s", ", ".join(s.name for s in self.skills) or "none")
        if self.redis is not None:
            await self.redis.ping()
        if self.audit is not None:
            self.audit.start()
        transport_task = asyncio.create_task(self.transport.run())
        log.info("connector %s started: model %s, DingTalk %s", __version__, self.settings.model_base_url,
                 self.settings.openapi_endpoint)
        await self.intake.stopping.wait()
        log.info("stopping: no new messages; finishing %d in flight, %d queued", self.dispatcher.in_flight,
                 self.dispatcher.backlog)
        await self.transport.stop()
        self.dispatcher.stop_accepting()
        await asyncio.gather(transport_task, return_exceptions=True)
        if not await self.dispatcher.drain(self.settings.drain_timeout_s):
            log.warning("drain timed out: finalizing open cards with a notice")
            await asyncio.gather(*(reply.abort(RESTARTING()) for reply in list(self.replies.cards.live)),
                                 return_exceptions=True)
            await self.dispatcher.cancel_all()
        await self.intake.settle()
        if self.audit is not None:
            await asyncio.to_thread(self.audit.stop)  # writes what is queued (or spills it)
        for skill in reversed(self.skills):
            try:
                await skill.stop()
            except Exception:
                log.exception("skill %s did not stop cleanly", skill.name)
        health_server.should_exit = True
        if self.alerts is not None:
            await self.alerts.close()
        await self.http.aclose()
        if self.model_http is not None:
            await self.model_http.aclose()
        if self.redis is not None:
            await self.redis.close()
        log.info("connector stopped")


def count_outcome(m: ConnectorMetrics) -> Callable[[Trail], None]:
    """Every handled message's outcome, and the documents its answer could not use (the dashboard's denials)."""
    for outcome in OUTCOMES:  # zeros from the start, so dashboards and alerts see every series
        m.outcomes.labels(outcome)

    def count(trail: Trail) -> None:
        m.outcomes.labels(trail.outcome).inc()
        if trail.denied:
            m.documents_denied.inc(len(trail.denied))

    return count


def build_app(settings: ConnectorSettings) -> ConnectorApp:
    """Every part, wired; SkillError if an enabled skill cannot run. Call it inside the event loop."""
    s, m = settings, ConnectorMetrics()
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
    # the model server's own client when it has a private CA: DingTalk keeps trusting only the system's CAs
    model_http = httpx.AsyncClient(verify=ssl.create_default_context(cafile=s.model_ca_bundle),
                                   limits=httpx.Limits(max_connections=256, max_keepalive_connections=64)) \
        if s.model_ca_bundle else http
    redis = None
    if s.redis_url:
        redis = RedisStores(s.redis_url.get_secret_value(), ttl_s=s.context_ttl_s, max_turns=s.context_max_turns,
                            ca_bundle=s.redis_ca_bundle,
                            dedup_ttl_s=s.dedup_ttl_s, on_error=lambda kind: m.errors.labels(kind).inc())
    context_store: Any = redis if redis is not None else MemoryContextStore(s.context_ttl_s, s.context_max_turns)
    dedup_store: Any = redis if redis is not None else MemoryDedupStore(s.dedup_ttl_s)
    retry = RetryPolicy.from_settings(s)
    model = ModelClient(s.model_base_url, s.model_api_key.get_secret_value(), model_http, model=s.model_name,
                        temperature=s.temperature, max_tokens=s.max_tokens, timeout_s=s.model_timeout_s,
                        connect_timeout_s=s.model_connect_timeout_s, retry=retry,
                        minter=TokenMinter(s.model_jwt_secret.get_secret_value(), ttl_s=s.model_token_ttl_s)
                        if s.model_jwt_secret else None, extra_body=s.model_extra_body())
    api = DingTalkAPI(endpoint=s.openapi_endpoint, client_id=s.client_id,
                      client_secret=s.client_secret.get_secret_value(), http=http, card_qps=s.card_qps,
                      retry=retry, on_call=lambda api, outcome: m.api_calls.labels(api, outcome).inc())
    replies = DingTalkReplies(api, s, ReplyHooks(
        on_reply=lambda path: (m.replies.labels(path).inc(), note_delivery(path)),
        on_first_card_call=m.to_first_card_call.observe,
        on_first_token_shown=m.to_first_token.observe,
        on_error=lambda kind: m.errors.labels(kind).inc()))
    skills = load_enabled(s.plugins)
    for skill in skills:  # zeros from the start, so dashboards and alerts see every series
        for outcome in ("answer", "augment", "error"):
            m.skill_results.labels(skill.name, outcome)
    limits, quota = Limits.from_settings(s), None
    if limits.any:  # daily quotas: in Redis when configured (shared by replicas), else in this process
        counters = RedisCounters(redis.client, on_error=lambda: m.errors.labels("quota").inc()) \
            if redis is not None else MemoryCounters()
        quota = Quota(counters, limits, timezone=s.quota_timezone, admins=s.admin_users)
        for outcome in QUOTA_OUTCOMES:
            m.quota.labels(outcome)
    services = SkillServices(model=model, skills=lambda: skills, version=__version__, context_ttl_s=s.context_ttl_s,
                             quota=quota, download=DingTalkFiles(api, s.robot, http).download,
                             embedder=SharedEmbedder())
    handler = ChatHandler(services=services, store=context_store, sink=replies, skills=skills,
                          system_prompt=s.system_prompt, max_tokens=s.max_tokens, context_window=s.context_window,
                          group_context_per_sender=s.group_context_per_sender,
                          turns_with_documents=s.context_turns_with_documents, trim_loops=s.loop_guard,
                          hooks=HandlerHooks(on_model_error=lambda: m.errors.labels("model").inc(),
                                             on_reply_done=m.to_final.observe,
                                             on_skill=lambda name, outcome: m.skill_results.labels(
                                                 name, outcome).inc()))
    notify = notifier(replies, m)
    directory = DirectoryCache(DingTalkDirectory(api, s.oapi, http, on_call=lambda api, outcome: m.api_calls.labels(
        api, outcome).inc()), s.directory_ttl_s)  # the sender's departments, for the skills and the audit
    trail_consumers: list[Callable[[Trail], None]] = [count_outcome(m)]  # + the audit writer, the quota charge
    audit = None
    if s.audit_enabled:
        audit = AuditWriter.from_settings(s, on_result=lambda result, n: m.audit_records.labels(result).inc(n),
                                          on_failure=m.audit_write_failures.inc)
        trail_consumers.append(audit.submit)  # never blocks: a bounded queue, drained by the writer's thread
    pipeline = chain([
        dedup(dedup_store, lambda msg: m.duplicates.inc()),
        trailed(trail_consumers),
        identity(directory, on_error=lambda: m.errors.labels("directory").inc()),
        allowlist(s.allow_users, s.allow_groups, notify),
        rate_limit(SlidingWindowLimiter(s.user_rate_limit, s.user_rate_window_s), notify, m.rate_limited.inc),
        message_policy(s.max_message_chars, notify, {kind for skill in skills for kind in skill.attachments}),
        *([quota_limit(quota, notify, lambda outcome: m.quota.labels(outcome).inc())] if quota is not None else []),
    ], handler)
    # one message at a time per context (the handler's own key): two askers in a group run side by side
    dispatcher = Dispatcher(pipeline, max_in_flight=s.max_in_flight, max_backlog=s.max_backlog,
                            key=handler.context_key)

    async def seen(message: IncomingMessage) -> bool:
        return await dedup_store.seen(dedup_key(message))

    async def sighted(message: IncomingMessage) -> bool:  # a shed message's busy notice is its one answer
        return await dedup_store.first_sighting(dedup_key(message))

    intake = Intake(dispatcher, m, notify, on_refused=None if audit is None else lambda msg, reason: audit.submit(
        Trail(msg, outcome="refused", reason=reason, finished_mono=time.monotonic())), sink=replies,
        shedding=Shedding(s.max_expected_wait_s, dispatcher.rate) if s.max_expected_wait_s else None, seen=seen,
        refresh_s=s.queue_refresh_s, notice_after_s=s.queue_notice_after_s, sighted=sighted)
    dispatcher.on_done = intake.on_done
    transport = StreamTransport(
        client_id=s.client_id, client_secret=s.client_secret.get_secret_value(), on_message=intake.on_message,
        heartbeat_interval_s=s.heartbeat_interval_s, reconnect_policy=RetryPolicy.reconnect(s),
        endpoint=s.openapi_endpoint, http=http, handshake_timeout_s=s.stream_handshake_timeout_s,
        on_state=lambda state: m.reconnects.inc() if state == "reconnect" else None)
    m.gauges(backlog=lambda: dispatcher.backlog, in_flight=lambda: dispatcher.in_flight,
             connected=lambda: bool(transport.connected),
             redis_up=lambda: -1.0 if redis is None else (1.0 if redis.up else 0.0))
    return ConnectorApp(settings=s, metrics=m, http=http, redis=redis, replies=replies, skills=skills,
                        services=services, dispatcher=dispatcher, intake=intake, transport=transport, audit=audit,
                        model_http=model_http if model_http is not http else None, alerts=_alert_relay(s, m, api, http))


def _alert_relay(s: ConnectorSettings, m: ConnectorMetrics, api: DingTalkAPI,
                 http: httpx.AsyncClient) -> AlertRelay | None:
    """The ops group for Alertmanager's notifications (README: Alerts), when alerts_token is set."""
    if not s.alerts_token:
        return None
    for outcome in ("sent", "merged", "summary", "failed", "refused"):
        m.alert_notifications.labels(outcome)
    sender: Any = RobotGroupSender(api, s.robot, s.alerts_conversation_id) if s.alerts_conversation_id else \
        CustomRobotSender(http, s.alerts_webhook_url.get_secret_value() if s.alerts_webhook_url else "",
                          s.alerts_webhook_secret.get_secret_value() if s.alerts_webhook_secret else None)
    return AlertRelay(sender, s.alerts_max_per_minute,
                      on_outcome=lambda outcome, n: m.alert_notifications.labels(outcome).inc(n))


async def serve(settings: ConnectorSettings) -> None:
    """Build the connector inside the event loop, then run it until it is asked to stop."""
    await build_app(settings).run()
