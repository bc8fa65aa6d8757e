"""IdleTrim: freed memory back to the OS when the engine goes idle after work, at most once per interval."""

from __future__ import annotations

from inference.engines.memory import IdleTrim, _malloc_trim


def test_trims_once_per_busy_period_and_interval() -> None:
    now = [0.0]
    calls: list[int] = []
    trim = IdleTrim(10.0, clock=lambda: now[0], trim=lambda pad: calls.append(pad) or 1)
    trim.idle()
    assert calls == []  # no work since start: nothing to give back
    trim.busy = True
    trim.idle()
    assert calls == [0]
    trim.idle()
    assert calls == [0]  # idle again without work in between
    trim.busy = True
    now[0] = 5.0
    trim.idle()
    assert calls == [0]  # within the interval
    now[0] = 10.0
    trim.idle()
    assert calls == [0, 0] and trim.trims == 2 and not trim.busy


def test_zero_turns_it_off_and_the_real_call_works() -> None:
    off = IdleTrim(0, trim=lambda pad: 1 / 0)
    off.busy = True
    off.idle()  # never calls
    real = _malloc_trim()
    if real is not None:  # glibc
        assert real(0) in (0, 1)
        on = IdleTrim(1.0)
        on.busy = True
        on.idle()
        assert on.trims == 1
