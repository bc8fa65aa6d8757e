"""The per-message trail: what each stage notes, as the audit and quota consumers receive it."""

from __future__ import annotations

import asyncio

import pytest

from connector.core.handler import ChatHandler
from connector.core.middleware import allowlist, chain, message_policy, trailed
from connector.core.store import MemoryContextStore
from connector.core.trail import Trail, current, note_delivery, note_usage
from connector.skills import SkillServices

from .test_handler import FakeModel, FakeSink, Lookup, msg


def handler(sink: FakeSink, model: FakeModel | None = None) -> ChatHandler:
    services = SkillServices(model=model or FakeModel(), skills=list)
    return ChatHandler(services=services, store=MemoryContextStore(60, 10), sink=sink, skills=[Lookup(Lookup.config_model())],
                       system_prompt="", max_tokens=32, context_window=None, group_context_per_sender=True)


def run(middlewares, final, text: str) -> list[Trail]:
    done: list[Trail] = []

    async def notify(message, text) -> None:
        note_delivery("webhook")

    async def main() -> None:
        await chain([trailed([done.append]), *(m(notify) for m in middlewares)], final)(msg(text))

    asyncio.run(main())
    return done


def test_an_answer_records_skill_sources_usage_and_delivery() -> None:
    sink = FakeSink()
    h = handler(sink)

    async def final(message) -> None:
        note_usage("fake-model", 40, 7)
        await h(message)
        note_delivery("card")

    [trail] = run([], final, "when is the press serviced?")
    assert (trail.outcome, trail.skill, trail.model, trail.prompt_tokens, trail.completion_tokens) == \
        ("answered", "lookup", "fake-model", 40, 7)
    assert trail.answer.startswith("The answer.") and trail.delivery == "card"
    assert [c.source for c in trail.cited] == ["handbook.pdf (p. 2)", "handbook.pdf (p. 2)", "canteen.txt"]
    assert trail.finished_mono is not None and trail.latency_s >= 0
    assert current() is None  # closed with the message


def test_refusals_are_noted_with_their_reason() -> None:
    async def never(message) -> None:
        raise AssertionError("refused messages never reach the handler")

    [denied] = run([lambda notify: allowlist(["someone-else"], [], notify)], never, "hello")
    assert (denied.outcome, denied.reason, denied.delivery) == ("denied", "user_not_allowed", "webhook")
    [long] = run([lambda notify: message_policy(3, notify)], never, "far too long")
    assert (long.outcome, long.reason) == ("refused", "too_long")


def test_a_crash_is_a_failure_and_still_reaches_the_consumers() -> None:
    async def crash(message) -> None:
        raise RuntimeError("boom")

    seen: list[Trail] = []
    with pytest.raises(RuntimeError):
        asyncio.run(chain([trailed([seen.append])], crash)(msg("hello")))
    assert [(t.outcome, t.reason) for t in seen] == [("failed", "RuntimeError")]


def test_a_broken_consumer_does_not_stop_the_others() -> None:
    seen: list[Trail] = []

    def broken(trail: Trail) -> None:
        raise ValueError("consumer bug")

    async def final(message) -> None: ...

    asyncio.run(chain([trailed([broken, seen.append])], final)(msg("hi")))
    assert [t.outcome for t in seen] == ["answered"]


def test_concurrent_messages_keep_their_own_trails() -> None:
    seen: list[Trail] = []

    async def final(message) -> None:
        await asyncio.sleep(0.01)
        note_usage("m", 1, int(message.message_id[1:]))

    async def main() -> None:
        pipeline = chain([trailed([seen.append])], final)
        await asyncio.gather(*(asyncio.create_task(pipeline(msg("x", n))) for n in range(1, 6)))

    asyncio.run(main())
    assert sorted((t.message.message_id, t.completion_tokens) for t in seen) == [(f"m{n}", n) for n in range(1, 6)]
