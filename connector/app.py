"""The connector process: transport -> dispatcher -> middlewares -> handler -> reply sink."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

import httpx

from . import __version__
from .core.dispatcher import Dispatcher
from .core.handler import ChatHandler, HandlerHooks
from .core.messages import BUSY, RESTARTING
from .core.middleware import allowlist, chain, dedup, message_policy, rate_limit
from .core.model import ModelClient
from .core.ratelimit import SlidingWindowLimiter
from .core.retry import RetryPolicy
from .core.store import MemoryContextStore, MemoryDedupStore, RedisStores
from .dingtalk.openapi import DingTalkAPI
from .dingtalk.replies import DingTalkReplies, ReplyHooks
from .dingtalk.transport import StreamTransport
from .metrics import ConnectorMetrics
from .settings import ConnectorSettings
from .skills.base import Skill, SkillServices
from .skills.registry import SkillError, load_enabled
from .types import IncomingMessage

log = logging.getLogger("connector")

class ConnectorApp:
    def __init__(self, settings: ConnectorSettings) -> None:
        self.settings = settings
        self.metrics = ConnectorMetrics()
        self.http: httpx.AsyncClient | None = None
        self.redis: RedisStores | None = None
        self.transport: StreamTransport | None = None
        self.dispatcher: Dispatcher | None = None
        self.replies: DingTalkReplies | None = None
        self.skills: list[Skill] = []
        self.services: SkillServices | None = None
        self._stop = asyncio.Event()
        self._background: set[asyncio.Task] = set()
        self.started_at = time.time()

    def request_stop(self) -> None:
        self._stop.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def build(self) -> None:
        s, m = self.settings, self.metrics
        self.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        if s.redis_url:
            self.redis = RedisStores(s.redis_url.get_secret_value(), ttl_s=s.context_ttl_s,
                                     max_turns=s.context_max_turns, dedup_ttl_s=s.dedup_ttl_s,
                                     on_error=lambda kind: m.errors.labels(kind).inc())
            context_store: Any = self.redis
            dedup_store: Any = self.redis
        else:
            context_store = MemoryContextStore(s.context_ttl_s, s.context_max_turns)
            dedup_store = MemoryDedupStore(s.dedup_ttl_s)
        retry = RetryPolicy.from_settings(s)
        model = ModelClient(s.model_base_url, s.model_api_key.get_secret_value(), self.http, model=s.model_name,
                            temperature=s.temperature, max_tokens=s.max_tokens, timeout_s=s.model_timeout_s,
                            connect_timeout_s=s.model_connect_timeout_s, retry=retry)
        api = DingTalkAPI(endpoint=s.openapi_endpoint, client_id=s.client_id,
                          client_secret=s.client_secret.get_secret_value(), http=self.http, card_qps=s.card_qps,
                          retry=retry, on_call=lambda api, outcome: m.api_calls.labels(api, outcome).inc())
        self.replies = DingTalkReplies(api, s, ReplyHooks(
            on_reply=lambda path: m.replies.labels(path).inc(),
            on_first_card_call=m.to_first_card_call.observe,
            on_first_token_shown=m.to_first_token.observe,
            on_error=lambda kind: m.errors.labels(kind).inc()))
        self.skills = load_enabled(s.plugins)
        for skill in self.skills:  # zeros from the start, so dashboards and alerts see every series
            for outcome in ("answer", "augment", "error"):
                m.skill_results.labels(skill.name, outcome)
        self.services = SkillServices(model=model, skills=lambda: self.skills, version=__version__,
                                      context_ttl_s=s.context_ttl_s)
        handler = ChatHandler(services=self.services, store=context_store, sink=self.replies, skills=self.skills,
                              system_prompt=s.system_prompt, max_tokens=s.max_tokens, context_window=s.context_window,
                              group_context_per_sender=s.group_context_per_sender,
                              hooks=HandlerHooks(on_model_error=lambda: m.errors.labels("model").inc(),
                                                 on_reply_done=m.to_final.observe,
                                                 on_skill=lambda name, outcome: m.skill_results.labels(
                                                     name, outcome).inc()))
        notify = self._notify
        pipeline = chain([
            dedup(dedup_store, lambda msg: m.duplicates.inc()),
            allowlist(s.allow_users, s.allow_groups, notify),
            rate_limit(SlidingWindowLimiter(s.user_rate_limit, s.user_rate_window_s), notify, m.rate_limited.inc),
            message_policy(s.max_message_chars, notify),
        ], handler)
        self.dispatcher = Dispatcher(pipeline, max_in_flight=s.max_in_flight, max_backlog=s.max_backlog)
        self.transport = StreamTransport(
            client_id=s.client_id, client_secret=s.client_secret.get_secret_value(), on_message=self.on_message,
            heartbeat_interval_s=s.heartbeat_interval_s, reconnect_policy=RetryPolicy.reconnect(s),
            on_state=lambda state: m.reconnects.inc() if state == "reconnect" else None)
        m.gauges(backlog=lambda: self.dispatcher.backlog if self.dispatcher else 0,
                 in_flight=lambda: self.dispatcher.in_flight if self.dispatcher else 0,
                 connected=lambda: bool(self.transport and self.transport.connected),
                 redis_up=lambda: -1.0 if self.redis is None else (1.0 if self.redis.up else 0.0))

    async def _notify(self, message: IncomingMessage, text: str) -> None:
        assert self.replies is not None
        try:
            await self.replies.send_text(message, text)
        except Exception as exc:  # a notice that cannot be sent is logged, never fatal
            self.metrics.errors.labels("notice").inc()
            log.warning("notice to %s not delivered: %s", message.message_id, type(exc).__name__)

    def on_message(self, message: IncomingMessage) -> None:
        """Called by the transport right after the ACK."""
        self.metrics.received.labels(message.msgtype).inc()
        assert self.dispatcher is not None
        log.debug("received %s (%s) in %s from %s", message.message_id, message.msgtype, message.conversation_id,
                  message.sender_id)
        if not self.dispatcher.submit(message):
            self.metrics.refused.inc()
            self._spawn(self._notify(message, BUSY() if not self._stop.is_set() else RESTARTING()))

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "version": __version__,
                "stream": "connected" if self.transport and self.transport.connected else "disconnected",
                "redis": "none" if self.redis is None else ("up" if self.redis.up else "down"),
                "backlog": self.dispatcher.backlog if self.dispatcher else 0,
                "in_flight": self.dispatcher.in_flight if self.dispatcher else 0,
                "skills": {skill.name: skill.status() for skill in self.skills},
                "uptime_s": round(time.time() - self.started_at, 1)}

    async def run(self) -> None:
        self.build()
        assert self.transport and self.dispatcher and self.http
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop)
            except (NotImplementedError, RuntimeError):
                pass
        from .health import serve_health

        health_server = await serve_health(self, self.settings.health_host, self.settings.health_port)
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
        transport_task = asyncio.create_task(self.transport.run())
        log.info("connector %s started: model %s, DingTalk %s", __version__, self.settings.model_base_url,
                 self.settings.openapi_endpoint)
        await self._stop.wait()
        log.info("stopping: no new messages; finishing %d in flight, %d queued", self.dispatcher.in_flight,
                 self.dispatcher.backlog)
        await self.transport.stop()
        self.dispatcher.stop_accepting()
        await asyncio.gather(transport_task, return_exceptions=True)
        if not await self.dispatcher.drain(self.settings.drain_timeout_s):
            log.warning("drain timed out: finalizing open cards with a notice")
            assert self.replies is not None
            await asyncio.gather(*(reply.abort(RESTARTING()) for reply in list(self.replies.cards.live)),
                                 return_exceptions=True)
            await self.dispatcher.cancel_all()
        await asyncio.gather(*self._background, return_exceptions=True)
        for skill in reversed(self.skills):
            try:
                await skill.stop()
            except Exception:
                log.exception("skill %s did not stop cleanly", skill.name)
        health_server.should_exit = True
        await self.http.aclose()
        if self.redis is not None:
            await self.redis.close()
        log.info("connector stopped")
