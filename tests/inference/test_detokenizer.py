"""Incremental detokenisation and stop strings, with the embedded model's real tokenizer."""

from __future__ import annotations

import pytest

from inference.engines.detokenizer import IncrementalDetokenizer

pytestmark = pytest.mark.slow  # the embedded model's tokenizer


@pytest.fixture(scope="module")
def tokenizer(embedded_model):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(embedded_model), local_files_only=True)


def _run(tokenizer, text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    detok = IncrementalDetokenizer(tokenizer, stop)
    out = ""
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        piece, hit = detok.push(token)
        out += piece
        if hit:
            return out, True
    return out + detok.flush(), False


def test_roundtrip_without_stop(tokenizer) -> None:
    text = "Hello, world! 你好，世界。 Ünïcödé ✓ emoji 🚀 done."
    assert _run(tokenizer, text, ()) == (text, False)


@pytest.mark.parametrize("stop", ["world", "o, w", "世界", "🚀", "\n\n"])
def test_stop_string_cut_and_never_emitted(tokenizer, stop: str) -> None:
    text = "Hello, world! 你好，世界。 emoji 🚀 done.\n\nmore"
    out, hit = _run(tokenizer, text, (stop,))
    assert hit
    assert out == text[: text.index(stop)]


def test_earliest_of_several_stops(tokenizer) -> None:
    out, hit = _run(tokenizer, "one two three four", ("four", "two"))
    assert hit and out == "one "


def test_partial_stop_prefix_is_released_at_the_end(tokenizer) -> None:
    out, hit = _run(tokenizer, "the end is wor", ("world",))
    assert not hit and out == "the end is wor"


def test_multibyte_characters_are_never_split(tokenizer) -> None:
    detok = IncrementalDetokenizer(tokenizer)
    pieces = []
    for token in tokenizer("🚀🚀 汉字", add_special_tokens=False)["input_ids"]:
        piece, _ = detok.push(token)
        pieces.append(piece)
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + detok.flush() == "🚀🚀 汉字"
