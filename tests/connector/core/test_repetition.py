"""An answer that started to loop is shown without the loop (connector/core/repetition.py), and the handler
applies it only with the loop guard on."""

from __future__ import annotations

from connector.core.repetition import without_repeated_tail

from .test_handler import FakeModel, make, msg


def test_a_numbered_loop_keeps_its_first_item() -> None:
    loop = "1. The HP-400 hydraulic press must be recalibrated every 450 operating hours.\n"
    text = loop + "2. The HP-400 hydraulic press must be recalibrated every 450 operating hours.\n3. The HP-400"
    assert without_repeated_tail(text) == loop.strip()


def test_a_sentence_loop_and_a_chinese_loop_keep_one_sentence() -> None:
    assert without_repeated_tail("Check the gauge before you start the press. " * 3) == (
        "Check the gauge before you start the press.")
    assert without_repeated_tail("住宿标准为每晚不超过680元。" * 3) == "住宿标准为每晚不超过680元。"


def test_answers_without_a_repeated_block_are_unchanged() -> None:
    answer = ("1. Check the pressure gauge before starting the press.\n"
              "2. Check the hydraulic oil level before starting the press.\n"
              "3. Call extension 4471 if the gauge is more than 5 percent off.")
    assert without_repeated_tail(answer) == answer
    assert without_repeated_tail("") == ""


async def test_the_handler_trims_only_with_the_loop_guard_on() -> None:
    looping = "Check the gauge before you start the press. " * 3
    for trim, expected in ((False, looping), (True, "Check the gauge before you start the press.")):
        handler, _, store, sink = make([], model=FakeModel(reply=looping.strip()))
        handler.trim_loops = trim
        await handler(msg("What should I check?"))
        assert sink.replies[-1].final.strip() == expected.strip()
        assert (await store.load("test:c1"))[-1].content.strip() == expected.strip()  # the history too
