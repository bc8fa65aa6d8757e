"""The demo's scorer (scripts/score_demo.py): its scoring, and a few demo questions asked through the real stack
(the emulator, the connector with the demo's settings, the inference server on the embedded model). No answer
may keep repeating a block of words: the demo's loop guard stops it. Correctness is not asserted here (a 135M
model's answers are measured in docs/skills.md, not promised); no timing either."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from ..servers import ROOT, ServerProcess

SCRIPT = ROOT / "scripts" / "score_demo.py"


@pytest.fixture(scope="module")
def score_demo():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("score_demo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["score_demo"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_questions_load_and_answers_are_scored(score_demo) -> None:
    questions = score_demo.load_questions()
    assert len(questions) >= 10 and len({q.id for q in questions}) == len(questions)
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in q.text) for q in questions)  # Chinese ones too
    hotel = next(q for q in questions if q.id == "travel-hotel-zh")
    good = score_demo.score(hotel, "每晚不超过680元。", 1.0)
    assert good.correct and good.short and not good.repeating and good.good
    looping = score_demo.score(hotel, "住宿标准为每晚不超过680元。" * 20, 1.0)
    assert looping.correct and looping.repeating and not looping.short and not looping.good
    assert score_demo.score(hotel, "I do not know.", 1.0).missing == ("680",)


@pytest.mark.slow
def test_demo_answers_do_not_loop(score_demo, inference: ServerProcess) -> None:
    questions = score_demo.load_questions(only={"press-check", "travel-hotel-zh", "password-expiry"})
    results, settings = score_demo.run(questions, model_url=inference.url + "/v1", timeout=600)
    assert settings.get("CONNECTOR_LOOP_GUARD") == "true"
    table = score_demo.table(results)
    assert all(r.answer.strip() for r in results), table
    assert all(not r.repeating for r in results), table
