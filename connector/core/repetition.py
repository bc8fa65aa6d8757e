"""An answer that started to loop, shown without the loop: with the loop guard on (settings.loop_guard), the model
server stops an answer once a block of words comes back (our `loop_guard` extension), and the card's final text
ends before the block's second occurrence, at the last line or sentence end before it.

Words as the server's guard counts them (inference/serving/loop_guard.py; the connector talks to the model over
the API only, so the rule is repeated here): a run of letters or digits, one CJK character, a run of punctuation.
"""

from __future__ import annotations

import re

LOOP_BLOCK = 12  # words in a block (8 cut real answers that restate a phrase): stop at its second occurrence
LOOP_REPEATS = 2

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORD = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]+")
_BREAK = re.compile(r"[.!?。！？；;]\s|[。！？；]|\n")


def without_repeated_tail(text: str, block: int = LOOP_BLOCK) -> str:
    """`text` up to the second occurrence of its first repeated block of `block` words, cut back to the last
    line or sentence end before it; unchanged when no block repeats."""
    spans = [(m.start(), m.group().lower()) for m in _WORD.finditer(text)]
    seen: set[tuple[str, ...]] = set()
    for i in range(len(spans) - block + 1):
        gram = tuple(w for _, w in spans[i:i + block])
        if gram in seen:
            head = text[:spans[i][0]]
            ends = [m.end() for m in _BREAK.finditer(head)]
            return (head[:ends[-1]] if ends else head).rstrip()
        seen.add(gram)
    return text
