"""The dispatcher's scheduling: ordered by context key, fair across conversations, positions as announced."""

from __future__ import annotations

import asyncio

from connector.core.dispatcher import Dispatcher
from connector.types import IncomingMessage


def msg(conv: str, n: int, sender: str = "u1", kind: str = "dm") -> IncomingMessage:
    return IncomingMessage(platform="test", message_id=f"{conv}-{sender}-{n}", delivery_id=f"d-{conv}-{sender}-{n}",
                           conversation_id=conv, conversation_kind=kind, sender_id=sender, sender_name=sender,
                           text="hi", msgtype="text")  # type: ignore[arg-type]


def per_sender(m: IncomingMessage) -> str:
    return f"{m.conversation_id}:{m.sender_id}" if m.conversation_kind == "group" else m.conversation_id


class Gate:
    """A fake handler at the seam: records start order; each message runs until released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release: dict[str, asyncio.Event] = {}

    async def __call__(self, m: IncomingMessage) -> None:
        self.started.append(m.message_id)
        await self.release.setdefault(m.message_id, asyncio.Event()).wait()

    def done(self, message_id: str) -> None:
        self.release.setdefault(message_id, asyncio.Event()).set()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_two_senders_in_a_group_run_side_by_side_one_sender_in_order() -> None:
    gate = Gate()
    d = Dispatcher(gate, max_in_flight=8, max_backlog=100, key=per_sender)
    a1, a2, b1 = msg("g", 1, "alice", "group"), msg("g", 2, "alice", "group"), msg("g", 1, "bob", "group")
    for m in (a1, a2, b1):
        assert d.submit(m)
    await settle()
    assert gate.started == [a1.message_id, b1.message_id]  # bob does not wait behind alice
    assert d.ahead(a2) == 0 and d.backlog == 1  # alice's second waits for her first, not for bob
    gate.done(b1.message_id)
    await settle()
    assert a2.message_id not in gate.started
    gate.done(a1.message_id)
    await settle()
    assert gate.started[-1] == a2.message_id
    gate.done(a2.message_id)
    assert await d.drain(1)


async def test_one_context_key_per_conversation_keeps_the_old_order() -> None:
    gate = Gate()
    d = Dispatcher(gate, max_in_flight=8, max_backlog=100)  # keyed by conversation
    a1, b1 = msg("g", 1, "alice", "group"), msg("g", 1, "bob", "group")
    d.submit(a1)
    d.submit(b1)
    await settle()
    assert gate.started == [a1.message_id]
    gate.done(a1.message_id)
    gate.done(b1.message_id)
    assert await d.drain(1)
    assert gate.started == [a1.message_id, b1.message_id]


async def test_a_burst_in_one_group_does_not_starve_a_direct_message() -> None:
    gate = Gate()
    d = Dispatcher(gate, max_in_flight=2, max_backlog=100, key=per_sender)
    blockers = [msg(f"busy{n}", 0) for n in range(2)]
    for m in blockers:
        d.submit(m)  # both slots taken
    burst = [msg("g", n, f"s{n % 7}", "group") for n in range(20)]  # 7 senders, 20 messages, one group
    for m in burst:
        assert d.submit(m)
    direct = msg("dm-carol", 1, "carol")
    assert d.ahead_of_new(direct) <= 1  # announced before queueing: behind at most one group message
    d.submit(direct)
    assert d.ahead(direct) is not None and d.ahead(direct) <= 1
    await settle()
    for m in blockers:
        gate.done(m.message_id)
    # answer whatever runs, one at a time, until the direct message has started
    while direct.message_id not in gate.started:
        await settle()
        running = [i for i in gate.started if not gate.release.get(i, asyncio.Event()).is_set()]
        for message_id in running[:1]:
            gate.done(message_id)
    started_after_blockers = gate.started[2:]
    assert started_after_blockers.index(direct.message_id) <= 2  # a few positions at most, not 20
    for m in burst + [direct]:
        gate.done(m.message_id)
    assert await d.drain(2)
    by_sender: dict[str, list[str]] = {}
    for message_id in gate.started:
        if message_id.startswith("g-"):
            by_sender.setdefault(message_id.split("-")[1], []).append(message_id)
    for sender, ids in by_sender.items():  # each sender's own messages kept their order
        assert ids == sorted(ids, key=lambda i: int(i.rsplit("-", 1)[1])), sender


async def test_positions_follow_the_round_robin_and_count_down() -> None:
    gate = Gate()
    d = Dispatcher(gate, max_in_flight=1, max_backlog=100)
    first = msg("a", 0)
    d.submit(first)
    queued = [msg("a", 1), msg("a", 2), msg("b", 1), msg("c", 1)]
    for m in queued:
        d.submit(m)
    # a's next turn comes after the conversations already waiting: b, c, then a's two in order
    assert [m.message_id for m in d.schedule()] == ["b-u1-1", "c-u1-1", "a-u1-1", "a-u1-2"]
    assert d.ahead(queued[1]) == 3
    assert d.pending("a-u1-1") and not d.pending("z-u1-1")
    await settle()
    gate.done(first.message_id)
    await settle()
    assert gate.started[-1] == "b-u1-1" and d.ahead(queued[1]) == 2
    for m in queued:
        gate.done(m.message_id)
    assert await d.drain(2)
    assert d.ahead(queued[1]) is None and not d.pending("a-u1-1")


async def test_the_service_rate_is_measured_from_finished_messages() -> None:
    gate = Gate()
    d = Dispatcher(gate, max_in_flight=4, max_backlog=10)
    assert d.rate.per_second() is None
    for n in range(3):
        m = msg("a", n)
        d.submit(m)
        gate.done(m.message_id)
    assert await d.drain(1)
    assert d.rate.per_second() is not None and d.rate.per_second() > 0
