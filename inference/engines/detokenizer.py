"""Incremental detokenisation with stop strings (the stop text is never emitted).

Each token is decoded once, by `tokenizers`' `DecodeStream` (it keeps the few tokens a multi-byte
character or a merged space needs and returns text only once it is valid UTF-8), so a sequence's
detokenisation costs linear time in its length; re-decoding the whole output every token was
quadratic. A tokenizer without the Rust backend (a slow one) falls back to re-decoding.
"""

from __future__ import annotations

from typing import Any


def _stream(tokenizer: Any) -> tuple[Any, Any] | None:
    """(the Rust tokenizer, a DecodeStream) when the tokenizer has one, else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "decode_batch"):
        return None
    try:
        from tokenizers.decoders import DecodeStream
    except ImportError:
        return None
    return backend, DecodeStream(skip_special_tokens=True)


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = ()) -> None:
        self._tokenizer = tokenizer
        self._stream = _stream(tokenizer)
        self._stop = stop
        self._max_stop = max((len(s) for s in stop), default=0)
        self._ids: list[int] = []  # only for the fallback
        self._emitted = 0  # characters of the decoded text already emitted
        self._text = ""

    def _decode(self, token_id: int) -> str | None:
        """The whole text so far, or None while a character is incomplete."""
        if self._stream is not None:
            backend, stream = self._stream
            piece = stream.step(backend, token_id)
            if piece is None:
                return None
            return self._text + piece
        self._ids.append(token_id)
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        return None if text.endswith("\ufffd") else text

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add one token. Returns (text safe to emit now, stop string hit)."""
        text = self._decode(token_id)
        if text is None:
            return "", False  # an incomplete UTF-8 sequence: wait for the next token
        self._text = text
        if self._stop:
            start = max(0, self._emitted - self._max_stop)
            hit = -1
            for stop in self._stop:
                index = text.find(stop, start)
                if index != -1 and (hit == -1 or index < hit):
                    hit = index
            if hit != -1:
                out = text[self._emitted:hit] if hit > self._emitted else ""
                self._emitted = max(self._emitted, hit)
                return out, True
            safe_end = len(text) - self._held_back(text)
        else:
            safe_end = len(text)
        if safe_end <= self._emitted:
            return "", False
        out = text[self._emitted:safe_end]
        self._emitted = safe_end
        return out, False

    def _held_back(self, text: str) -> int:
        """Length of the longest tail of `text` that could start a stop string."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if stop.startswith(text[-size:]):
                    longest = size
                    break
        return longest

    def flush(self) -> str:
        """Whatever was held back, at the end of a sequence that did not hit a stop string."""
        out = self._text[self._emitted:]
        self._emitted = len(self._text)
        return out
