"""Daily quotas: messages and completion tokens per user and per department, reset at local midnight.

Counters live in Redis when one is configured (replicas share them: one key per day, per user or department,
per kind, `appliance:quota:<YYYY-MM-DD>:<user|dept>:<id>:<messages|tokens>`, INCRBY and EXPIREAT an hour after
the day's end) and in the process otherwise (`MemoryCounters`). Redis down fails open: the message is answered
as if nothing had been used, the error is counted (errors{kind="quota"}) and logged once per outage.

The `quota_limit` middleware runs after the rate limiter and the message policy. Before the handler it reads
what the sender and each of the sender's departments (from the trail, filled by the identity middleware) used
today; a limit reached (used >= limit; 0 is no limit) gets a polite refusal naming the limit and the reset time
(catalogue QUOTA_EXCEEDED / QUOTA_DEPARTMENT_EXCEEDED), and the trail's outcome is `rate_limited` with reason
`quota_user_messages`, `quota_user_tokens`, `quota_department_messages` or `quota_department_tokens`. After
the handler it charges one message and the trail's completion tokens (what the model client noted) to the user
and each department; the token limit is therefore checked before a message, and the answer that crosses it is
still given whole. Admins (settings.admin_users, or the IM's own admin flag) are never refused and their usage
is counted on their own counters only, not their departments'. The quota commands (`/quota`, `额度`) are never
refused nor charged: a user over the limit can still see why. Each check is counted by outcome: allowed,
refused, exempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from ..types import IncomingMessage
from .messages import (
    QUOTA_DEPARTMENT_EXCEEDED,
    QUOTA_EXCEEDED,
    QUOTA_MESSAGES,
    QUOTA_TOKENS,
)
from .middleware import Middleware, Next, Notify
from .trail import current, refuse

log = logging.getLogger("connector.quota")

COMMANDS = ("/quota", "额度")  # answered by the quota skill; never refused nor charged
Scope = Literal["user", "dept"]
Kind = Literal["messages", "tokens"]
Outcome = Literal["allowed", "refused", "exempt"]
OUTCOMES: tuple[Outcome, ...] = ("allowed", "refused", "exempt")


class CounterStore(Protocol):
    async def read(self, keys: Sequence[str]) -> list[int]:
        """The counters' values (0 for a missing or expired key)."""
        ...

    async def add(self, amounts: dict[str, int], expire_at: float) -> None:
        """Add to each counter; each expires at `expire_at` (epoch seconds)."""
        ...


class MemoryCounters:
    """Counters in this process (no Redis configured): each replica counts on its own."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._values: dict[str, tuple[int, float]] = {}

    async def read(self, keys: Sequence[str]) -> list[int]:
        now = self.clock()
        entries = [self._values.get(k) for k in keys]
        return [entry[0] if entry is not None and entry[1] > now else 0 for entry in entries]

    async def add(self, amounts: dict[str, int], expire_at: float) -> None:
        now = self.clock()
        for key, amount in amounts.items():
            entry = self._values.get(key)
            value = entry[0] if entry and entry[1] > now else 0
            self._values[key] = (value + amount, expire_at)
        if len(self._values) > 10_000:  # yesterday's counters go
            self._values = {k: e for k, e in self._values.items() if e[1] > now}


class RedisCounters:
    """Counters in Redis, shared by every replica; fails open while Redis is down."""

    def __init__(self, client: Any, on_error: Callable[[], None] | None = None) -> None:
        self._redis = client  # redis.asyncio.Redis (the context store's client)
        self._on_error = on_error or (lambda: None)
        self.up = True

    def _down(self, what: str, exc: Exception) -> None:
        if self.up:
            log.warning("Redis unavailable for quotas (%s: %s); not limiting until it returns", what,
                        type(exc).__name__)
        self.up = False
        self._on_error()

    async def read(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        try:
            values = await self._redis.mget(list(keys))
        except Exception as exc:
            self._down("read", exc)
            return [0] * len(keys)
        self.up = True
        return [int(v) if v else 0 for v in values]

    async def add(self, amounts: dict[str, int], expire_at: float) -> None:
        if not amounts:
            return
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key, amount in amounts.items():
                    pipe.incrby(key, amount)
                    pipe.expireat(key, int(expire_at))
                await pipe.execute()
        except Exception as exc:
            self._down("charge", exc)
            return
        self.up = True


@dataclass(frozen=True, slots=True)
class Limits:
    """Per day; 0: no limit."""

    user_messages: int = 0
    user_tokens: int = 0
    department_messages: int = 0
    department_tokens: int = 0

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(settings.quota_user_messages_per_day, settings.quota_user_tokens_per_day,
                   settings.quota_department_messages_per_day, settings.quota_department_tokens_per_day)

    @property
    def any(self) -> bool:
        return any((self.user_messages, self.user_tokens, self.department_messages, self.department_tokens))

    @property
    def departments(self) -> bool:
        return bool(self.department_messages or self.department_tokens)


@dataclass(frozen=True, slots=True)
class Allowance:
    """What one user or department used today, and its limits (0: none)."""

    scope: Scope
    ident: str
    messages: int
    tokens: int
    message_limit: int
    token_limit: int

    def exceeded(self) -> Kind | None:
        if self.message_limit and self.messages >= self.message_limit:
            return "messages"
        if self.token_limit and self.tokens >= self.token_limit:
            return "tokens"
        return None


@dataclass(frozen=True, slots=True)
class QuotaReport:
    """Today's usage of a sender: theirs first, then each department's (those with limits)."""

    allowances: tuple[Allowance, ...]
    exempt: bool
    day: str  # YYYY-MM-DD in the quota time zone
    resets_at: datetime  # the next local midnight
    timezone: str

    @property
    def reset_text(self) -> str:
        return f"{self.resets_at:%H:%M} ({self.timezone})"


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    report: QuotaReport
    reason: str = ""  # quota_user_messages...
    notice: str = ""  # the refusal shown to the sender


class QuotaReader(Protocol):
    """What the /quota skill reads (SkillServices.quota)."""

    async def report(self, message: IncomingMessage, departments: Sequence[str]) -> QuotaReport: ...


class Quota:
    def __init__(self, store: CounterStore, limits: Limits, *, timezone: str = "Asia/Shanghai",
                 admins: Iterable[str] = (), prefix: str = "appliance",
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.limits, self.clock, self.prefix = store, limits, clock, prefix
        self.tz_name, self.tz = timezone, ZoneInfo(timezone)
        self.admins = frozenset(admins)

    def is_exempt(self, message: IncomingMessage) -> bool:
        return message.is_admin or message.sender_id in self.admins

    def today(self) -> tuple[str, datetime]:
        """Today's date in the quota time zone and the next local midnight."""
        now = datetime.fromtimestamp(self.clock(), self.tz)
        tomorrow: date = now.date() + timedelta(days=1)
        return now.date().isoformat(), datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=self.tz)

    def key(self, day: str, scope: Scope, ident: str, kind: Kind) -> str:
        return f"{self.prefix}:quota:{day}:{scope}:{ident}:{kind}"

    def _scopes(self, message: IncomingMessage, departments: Sequence[str]) -> list[tuple[Scope, str, int, int]]:
        scopes: list[tuple[Scope, str, int, int]] = [
            ("user", message.sender_id, self.limits.user_messages, self.limits.user_tokens)]
        if self.limits.departments:
            scopes += [("dept", d, self.limits.department_messages, self.limits.department_tokens)
                       for d in dict.fromkeys(departments)]
        return scopes

    async def report(self, message: IncomingMessage, departments: Sequence[str]) -> QuotaReport:
        day, resets_at = self.today()
        scopes = self._scopes(message, departments)
        values = await self.store.read([self.key(day, scope, ident, kind) for scope, ident, _, _ in scopes
                                        for kind in ("messages", "tokens")])
        allowances = tuple(Allowance(scope, ident, values[2 * i], values[2 * i + 1], message_limit, token_limit)
                           for i, (scope, ident, message_limit, token_limit) in enumerate(scopes))
        return QuotaReport(allowances, self.is_exempt(message), day, resets_at, self.tz_name)

    async def check(self, message: IncomingMessage, departments: Sequence[str]) -> Decision:
        report = await self.report(message, departments)
        if report.exempt:
            return Decision("exempt", report)
        for allowance in report.allowances:
            kind = allowance.exceeded()
            if kind is None:
                continue
            limit = allowance.message_limit if kind == "messages" else allowance.token_limit
            what = (QUOTA_MESSAGES if kind == "messages" else QUOTA_TOKENS).bind(count=limit)
            if allowance.scope == "user":
                notice = QUOTA_EXCEEDED(what=what, reset=report.reset_text)
                return Decision("refused", report, f"quota_user_{kind}", notice)
            notice = QUOTA_DEPARTMENT_EXCEEDED(what=what, reset=report.reset_text)
            return Decision("refused", report, f"quota_department_{kind}", notice)
        return Decision("allowed", report)

    async def charge(self, message: IncomingMessage, departments: Sequence[str], tokens: int,
                     day: str | None = None, resets_at: datetime | None = None) -> None:
        """One message and `tokens` completion tokens, on `day` (default: today); departments unless exempt."""
        if day is None or resets_at is None:
            day, resets_at = self.today()
        scopes = self._scopes(message, () if self.is_exempt(message) else departments)
        amounts: dict[str, int] = {}
        for scope, ident, _, _ in scopes:
            amounts[self.key(day, scope, ident, "messages")] = 1
            if tokens > 0:
                amounts[self.key(day, scope, ident, "tokens")] = tokens
        await self.store.add(amounts, resets_at.timestamp() + 3600)


def quota_limit(quota: Quota, notify: Notify, on_outcome: Callable[[Outcome], None]) -> Middleware:
    """Refuse a sender (or department) over today's quota; charge each message handled (module docstring)."""

    async def middleware(message: IncomingMessage, call_next: Next) -> None:
        if message.text.strip() in COMMANDS:
            await call_next()
            return
        trail = current()
        departments = trail.departments if trail is not None else ()
        decision = await quota.check(message, departments)
        on_outcome(decision.outcome)
        if decision.outcome == "refused":
            refuse("rate_limited", decision.reason)
            await notify(message, decision.notice)
            return
        try:
            await call_next()
        finally:
            tokens = trail.completion_tokens if trail is not None else 0
            await quota.charge(message, departments, tokens, decision.report.day, decision.report.resets_at)

    return middleware
