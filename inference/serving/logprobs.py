"""Engine token log-probabilities -> OpenAI's two shapes (chat's `content` list, completions' parallel lists)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InvalidRequest
from ..types import TokenLogprob


def chat_request_logprobs(logprobs: bool | None, top_logprobs: int | None) -> int | None:
    """How many alternatives a chat request wants per token; None for no logprobs."""
    if logprobs:
        return top_logprobs or 0
    if top_logprobs:
        raise InvalidRequest("top_logprobs needs logprobs set to true.", param="top_logprobs")
    return None


def _utf8(text: str) -> list[int]:
    return list(text.encode("utf-8", errors="replace"))


def chat_logprobs(tokens: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {"content": [{"token": t.token, "logprob": t.logprob, "bytes": _utf8(t.token),
                         "top_logprobs": [{"token": s, "logprob": lp, "bytes": _utf8(s)} for s, lp in t.top]}
                        for t in tokens], "refusal": None}


def completion_logprobs(tokens: Sequence[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """`offset`: where the first token's text starts in the choice's text (after an echoed prompt)."""
    offsets, position = [], offset
    for t in tokens:
        offsets.append(position)
        position += len(t.token)
    return {"text_offset": offsets, "token_logprobs": [t.logprob for t in tokens], "tokens": [t.token for t in tokens],
            "top_logprobs": [dict(t.top) for t in tokens]}
