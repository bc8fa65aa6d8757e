"""The loop guard (request extension `loop_guard`): the guard itself, the serving layer on a fake engine (the
choice ends with "stop" and the engine's generation is cancelled), and the real server on the embedded model."""

from __future__ import annotations

import openai
import pytest

from inference.serving.loop_guard import LoopGuard, repeated_blocks, words
from inference.types import LoopGuardParams

from ..servers import ServerProcess
from .fakes import FakeEngine, started_app


def feed_all(guard: LoopGuard, text: str, step: int = 3) -> bool:
    """Feed `text` in small deltas (words split across them), as an engine streams."""
    return any(guard.feed(text[i:i + step]) for i in range(0, len(text), step))


def test_words_split_latin_runs_cjk_characters_and_punctuation_runs() -> None:
    assert words("Check the HP-400 gauge... 住宿标准") == ["check", "the", "hp", "-", "400", "gauge", "...",
                                                        "住", "宿", "标", "准"]


def test_a_repeated_sentence_trips_the_guard() -> None:
    guard = LoopGuard(LoopGuardParams(ngram=8, repeats=3))
    sentence = "Check the pressure gauge before you start the press. "
    assert not feed_all(guard, sentence * 2)
    assert feed_all(guard, sentence)  # the third time
    assert guard.tripped and guard.feed("more")


def test_a_short_loop_and_a_chinese_loop_trip_it_too() -> None:
    assert feed_all(LoopGuard(LoopGuardParams(8, 3)), "Yes. " * 12)
    assert feed_all(LoopGuard(LoopGuardParams(8, 3)), "住宿标准为每晚不超过680元。" * 3)


def test_lists_whose_items_differ_do_not_trip_it() -> None:
    answer = ("Before starting the HP-400 press:\n"
              "1. Check the pressure gauge before starting the press.\n"
              "2. Check the hydraulic oil level before starting the press.\n"
              "3. Check the guards and the emergency stop before starting the press.\n"
              "4. Check the shift log before starting the press.\n"
              "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n"
              "差旅报销：住宿每晚不超过680元；交通费凭票据实报销；报销单须在10个工作日内提交。")
    guard = LoopGuard(LoopGuardParams(8, 3))
    assert not feed_all(guard, answer)
    assert repeated_blocks(answer, 8) == 1


def test_two_repeats_allowed_means_the_second_trips() -> None:
    guard = LoopGuard(LoopGuardParams(ngram=4, repeats=2))
    assert not feed_all(guard, "one two three four five ")
    assert feed_all(guard, "one two three four ")


def test_repeated_blocks_counts_the_most_repeated() -> None:
    assert repeated_blocks("a b c a b c a b c", 3) == 3
    assert repeated_blocks("a b", 3) == 0


async def test_the_serving_layer_ends_a_looping_choice_and_cancels_its_generation() -> None:
    engine = FakeEngine(max_model_len=512)  # it loops over 8 words
    async with started_app(engine) as (_, client):
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}
        plain = (await client.post("/v1/chat/completions", json=body)).json()
        guarded = (await client.post("/v1/chat/completions",
                                     json={**body, "loop_guard": {"ngram": 4, "repeats": 2}})).json()
        default = (await client.post("/v1/chat/completions", json={**body, "loop_guard": True})).json()
        stream = await client.post("/v1/chat/completions", json={**body, "stream": True, "loop_guard": True})
        bad = await client.post("/v1/chat/completions", json={**body, "loop_guard": {"ngram": 1}})
    assert plain["choices"][0]["finish_reason"] == "length" and plain["usage"]["completion_tokens"] == 100
    assert guarded["choices"][0]["finish_reason"] == "stop"
    assert guarded["usage"]["completion_tokens"] == 4 + 8  # the 4 words came back once, after a period of 8
    assert default["choices"][0]["finish_reason"] == "stop" and default["usage"]["completion_tokens"] == 8 + 2 * 8
    assert engine.aborted == [r.request_id for r in engine.requests[1:]]  # the guarded ones were cancelled
    assert '"finish_reason":"stop"' in stream.text and stream.text.endswith("data: [DONE]\n\n")
    assert bad.status_code == 400 and "ngram" in bad.text


@pytest.mark.slow
def test_the_real_server_stops_a_looping_completion(inference: ServerProcess) -> None:
    client = openai.OpenAI(base_url=inference.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    model = client.models.list().data[0].id
    prompt = "Check the gauge. Check the oil. " * 6
    free = client.completions.create(model=model, prompt=prompt, max_tokens=120, temperature=0)
    guarded = client.completions.create(model=model, prompt=prompt, max_tokens=120, temperature=0,
                                        extra_body={"loop_guard": True})
    chat = client.chat.completions.create(model=model, max_tokens=120, temperature=0,
                                          messages=[{"role": "user", "content": "Say 'Check the gauge.' 50 times."}],
                                          extra_body={"loop_guard": {"ngram": 6, "repeats": 2}})
    assert free.choices[0].finish_reason == "length" and repeated_blocks(free.choices[0].text, 8) > 3
    assert guarded.choices[0].finish_reason == "stop"
    assert guarded.usage.completion_tokens < 120 and repeated_blocks(guarded.choices[0].text, 8) <= 3
    assert repeated_blocks(chat.choices[0].message.content or "", 6) <= 2
