"""The service rate and the shedding rule, with an injected clock."""

from __future__ import annotations

from connector.core.capacity import ServiceRate, Shedding


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_no_measurement_no_shedding() -> None:
    clock = Clock()
    rate = ServiceRate(clock=clock)
    policy = Shedding(max_expected_wait_s=10, rate=rate)
    decision = policy.decide(ahead=500, in_flight=32)
    assert not decision.shed and decision.expected_wait_s is None
    rate.started()
    clock.now += 5
    rate.finished()  # one answer is not a measurement
    assert rate.per_second() is None and not policy.decide(500, 32).shed


def test_rate_counts_busy_time_only() -> None:
    clock = Clock()
    rate = ServiceRate(window_s=60, clock=clock)
    for _ in range(4):  # four answers of 2 s each, with idle gaps in between
        rate.started()
        clock.now += 2
        rate.finished()
        clock.now += 10
    assert abs(rate.per_second() - 0.5) < 1e-9  # 4 answers in 8 busy seconds; the idle 40 s do not count
    clock.now += 120  # a quiet spell forgets the measurement
    assert rate.per_second() is None


def test_shed_when_the_expected_wait_exceeds_the_limit() -> None:
    clock = Clock()
    rate = ServiceRate(clock=clock)
    for _ in range(2):  # two at a time, each pair done in 1 s: 2 per busy second
        rate.started()
        rate.started()
        clock.now += 1
        rate.finished()
        rate.finished()
    policy = Shedding(max_expected_wait_s=10, rate=rate)
    assert policy.decide(ahead=10, in_flight=4) .expected_wait_s == 7.0
    assert not policy.decide(ahead=10, in_flight=4).shed
    late = policy.decide(ahead=20, in_flight=4)
    assert late.shed and late.expected_wait_s == 12.0
    assert not Shedding(max_expected_wait_s=0, rate=rate).decide(ahead=10_000, in_flight=4).shed  # 0: off
