"""The loop guard (request extension `loop_guard`): ends a choice (finish_reason "stop") whose text keeps
repeating the same n-gram block, the way a small model loops ("Check the gauge. Check the gauge. ...").

It works on the text the engine streams, so one implementation serves both engines: the serving layer feeds
every delta to the choice's guard and, when it trips, sends that delta as the last one and closes the
engine's iterator, which cancels the generation (as a client that goes away does).

The n-grams are of *words*, the same for every tokenizer: a run of letters or digits is one word, a CJK
character (or kana, hangul) is one, a run of punctuation is one, spaces do not count. The guard trips when
the last `ngram` words have been seen `repeats` times in the output. A loop of a short sentence trips it
too (its n-gram recurs every period), while a list whose items differ does not: only a block of `ngram`
words that comes back whole counts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

from ..types import LoopGuardParams

# CJK ideographs, kana, hangul: one word each; letters/digits: a run; punctuation: a run
_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]"
                   r"|[^\W\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+"
                   r"|[^\w\s]+")


def words(text: str) -> list[str]:
    """The guard's words of `text` (letters lower-cased)."""
    return [w.lower() for w in _WORD.findall(text)]


class LoopGuard:
    """Feed it a choice's text as it streams; it says when the output has started looping."""

    def __init__(self, params: LoopGuardParams) -> None:
        self.ngram, self.repeats = params.ngram, params.repeats
        self._pending = ""  # text whose last word may go on in the next delta
        self._words: list[str] = []
        self._seen: Counter[tuple[str, ...]] = Counter()
        self.tripped = False

    def feed(self, text: str) -> bool:
        """Add a delta; True once the last `ngram` words have come `repeats` times."""
        if self.tripped or not text:
            return self.tripped
        self._pending += text
        for word in self._complete_words():
            self._words.append(word)
            if len(self._words) >= self.ngram:
                gram = tuple(self._words[-self.ngram:])
                self._seen[gram] += 1
                if self._seen[gram] >= self.repeats:
                    self.tripped = True
                    break
        return self.tripped

    def _complete_words(self) -> Iterator[str]:
        """The words of the pending text that cannot grow any more (followed by something else)."""
        end = 0
        for match in _WORD.finditer(self._pending):
            if match.end() == len(self._pending):
                break  # the last word may continue in the next delta
            end = match.end()
            yield match.group().lower()
        self._pending = self._pending[end:]


def repeated_blocks(text: str, ngram: int) -> int:
    """How often the most repeated block of `ngram` words occurs in `text` (1: no block repeats, 0: too short):
    the measure the demo's scorer and tests use."""
    ws = words(text)
    counts = Counter(tuple(ws[i:i + ngram]) for i in range(len(ws) - ngram + 1))
    return max(counts.values(), default=0)
