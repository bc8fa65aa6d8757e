"""Daily quotas: counting, the day's rollover (injected clock), department limits, admin exemption, Redis down
(fails open, counted) and up (real redis-server: shared by replicas, keys expire after the day), the middleware
on a real trail, and the /quota skill."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from connector.core.quota import (
    Limits,
    MemoryCounters,
    Quota,
    RedisCounters,
    quota_limit,
)
from connector.core.trail import opened
from connector.skills.base import SkillContext, SkillServices
from connector.skills.quota_skill import QuotaSkill
from connector.types import IncomingMessage

from ...servers import free_port

TZ = ZoneInfo("Asia/Shanghai")


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


def msg(sender: str = "alice", text: str = "hello", *, is_admin: bool = False) -> IncomingMessage:
    return IncomingMessage(platform="test", message_id=f"m-{sender}-{text}", delivery_id="d",
                           conversation_id="c", conversation_kind="dm", sender_id=sender, sender_name=sender,
                           text=text, msgtype="text", is_admin=is_admin)


def quota(limits: Limits, clock: Clock | None = None, **kwargs) -> Quota:
    clock = clock or Clock(datetime(2026, 3, 1, 12, 0, tzinfo=TZ))
    return Quota(MemoryCounters(clock), limits, clock=clock, **kwargs)


async def test_messages_are_counted_and_the_limit_refuses_with_the_reset_time() -> None:
    q = quota(Limits(user_messages=2))
    for _ in range(2):
        assert (await q.check(msg(), ())).outcome == "allowed"
        await q.charge(msg(), (), tokens=10)
    decision = await q.check(msg(), ())
    assert decision.outcome == "refused" and decision.reason == "quota_user_messages"
    assert "今日额度已用完（2 条消息），将于 00:00 (Asia/Shanghai) 重置" in decision.notice
    assert "it resets at 00:00 (Asia/Shanghai)" in decision.notice
    assert (await q.check(msg("bob"), ())).outcome == "allowed"  # per user
    report = await q.report(msg(), ())
    assert (report.allowances[0].messages, report.allowances[0].tokens) == (2, 20)
    assert report.day == "2026-03-01" and report.resets_at == datetime(2026, 3, 2, tzinfo=TZ)


async def test_tokens_limit() -> None:
    q = quota(Limits(user_tokens=100))
    await q.charge(msg(), (), tokens=60)
    assert (await q.check(msg(), ())).outcome == "allowed"
    await q.charge(msg(), (), tokens=60)  # the answer that crosses the limit was given whole
    decision = await q.check(msg(), ())
    assert decision.reason == "quota_user_tokens" and "100 个 token" in decision.notice


async def test_the_day_rolls_over_at_local_midnight() -> None:
    clock = Clock(datetime(2026, 3, 1, 23, 59, 30, tzinfo=TZ))
    q = quota(Limits(user_messages=1), clock)
    await q.charge(msg(), (), tokens=0)
    assert (await q.check(msg(), ())).outcome == "refused"
    clock.now += 29  # 23:59:59
    assert (await q.check(msg(), ())).outcome == "refused"
    clock.now += 2  # 00:00:01 the next day (16:00 UTC: the zone matters)
    assert (await q.check(msg(), ())).outcome == "allowed"
    assert (await q.report(msg(), ())).day == "2026-03-02"


async def test_department_limits_count_every_member_and_each_department() -> None:
    q = quota(Limits(department_messages=3))
    for sender in ("alice", "bob", "carol"):
        await q.charge(msg(sender), ("sales",), tokens=5)
    decision = await q.check(msg("dave"), ("eng", "sales"))
    assert decision.outcome == "refused" and decision.reason == "quota_department_messages"
    assert "您所在部门今日的额度已用完（3 条消息）" in decision.notice
    assert (await q.check(msg("erin"), ("eng",))).outcome == "allowed"
    report = await q.report(msg("dave"), ("eng", "sales"))
    assert [(a.scope, a.ident, a.messages, a.message_limit) for a in report.allowances] == [
        ("user", "dave", 0, 0), ("dept", "eng", 0, 3), ("dept", "sales", 3, 3)]


async def test_admins_are_exempt_and_do_not_use_their_departments_allowance() -> None:
    q = quota(Limits(user_messages=1, department_messages=1), admins=["boss"])
    for _ in range(3):
        await q.charge(msg("boss"), ("sales",), tokens=1)
        await q.charge(msg("root", is_admin=True), ("sales",), tokens=1)
    assert (await q.check(msg("boss"), ("sales",))).outcome == "exempt"
    assert (await q.check(msg("root", is_admin=True), ("sales",))).outcome == "exempt"
    assert (await q.check(msg("alice"), ("sales",))).outcome == "allowed"
    report = await q.report(msg("boss"), ("sales",))
    assert report.exempt and report.allowances[0].messages == 3 and report.allowances[1].messages == 0


async def test_redis_down_fails_open_and_counts_the_error() -> None:
    import redis.asyncio as redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    errors = []
    client = redis.Redis(port=free_port(), socket_timeout=0.2, socket_connect_timeout=0.2,
                         retry=Retry(NoBackoff(), 0))  # nothing listens there
    q = Quota(RedisCounters(client, on_error=lambda: errors.append(1)), Limits(user_messages=1))
    try:
        await q.charge(msg(), (), tokens=5)
        await q.charge(msg(), (), tokens=5)
        assert (await q.check(msg(), ())).outcome == "allowed"
    finally:
        await client.aclose()
    assert len(errors) == 3


@pytest.mark.slow
async def test_redis_counters_are_shared_by_replicas_and_expire_after_the_day(redis_server) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    clock = Clock(datetime.now(TZ))  # Redis expires keys on its own clock
    prefix = f"test{free_port()}"
    replicas = [Quota(RedisCounters(client), Limits(user_messages=3), clock=clock, prefix=prefix) for _ in range(2)]
    try:
        await replicas[0].charge(msg(), ("sales",), tokens=7)
        await replicas[1].charge(msg(), ("sales",), tokens=8)
        assert (await replicas[0].report(msg(), ())).allowances[0].tokens == 15
        await replicas[0].charge(msg(), (), tokens=1)
        assert (await replicas[1].check(msg(), ())).outcome == "refused"
        day, resets_at = replicas[0].today()
        key = f"{prefix}:quota:{day}:user:alice:messages"
        assert await client.get(key) == "3"
        assert await client.expiretime(key) == int(resets_at.timestamp()) + 3600
        assert not await client.keys(f"{prefix}:quota:*:dept:*")  # no department limits: not counted
    finally:
        for key in await client.keys(f"{prefix}:*"):
            await client.delete(key)
        await client.aclose()


async def test_the_middleware_refuses_marks_the_trail_and_charges_tokens() -> None:
    q = quota(Limits(user_messages=2))
    notices, outcomes, handled = [], [], []

    async def notify(message, text):
        notices.append(text)

    async def handler():
        from connector.core.trail import note_usage
        note_usage("m", 10, 42)
        handled.append(1)

    middleware = quota_limit(q, notify, outcomes.append)
    trails = []
    for text in ("a", "b", "c", "/quota"):
        with opened(msg(text=text)) as trail:
            trail.departments = ("sales",)
            await middleware(trail.message, handler)
        trails.append(trail)
    assert outcomes == ["allowed", "allowed", "refused"] and len(handled) == 3  # /quota: neither checked nor refused
    assert trails[2].outcome == "rate_limited" and trails[2].reason == "quota_user_messages"
    assert len(notices) == 1 and "00:00" in notices[0]
    report = await q.report(msg(), ())
    assert (report.allowances[0].messages, report.allowances[0].tokens) == (2, 84)  # /quota not charged


async def test_the_quota_skill_shows_usage_limits_and_reset() -> None:
    q = quota(Limits(user_messages=50, department_tokens=1000))
    await q.charge(msg(), ("sales",), tokens=120)
    services = SkillServices(model=None, skills=list, quota=q)  # type: ignore[arg-type]
    skill = QuotaSkill(QuotaSkill.config_model(enabled=True))

    async def nothing():
        return []

    ctx = SkillContext(msg(text="/quota"), services, "k", nothing, nothing, departments=("sales",))
    answer = await skill.handle(ctx)
    assert answer is not None
    assert "消息 / messages: 1 / 50" in answer.text and "token 数 / tokens: 120 (不限 / no limit)" in answer.text
    assert "部门 sales / Department sales" in answer.text and "tokens: 120 / 1000" in answer.text
    assert "将于 00:00 (Asia/Shanghai) 重置 / resets at 00:00 (Asia/Shanghai)" in answer.text
    assert await skill.handle(SkillContext(msg(text="hello"), services, "k", nothing, nothing)) is None
    off = SkillServices(model=None, skills=list)  # type: ignore[arg-type]
    assert "No daily quotas" in (await skill.handle(SkillContext(msg(text="额度"), off, "k", nothing, nothing))).text
