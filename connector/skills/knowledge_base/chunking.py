"""Chunks of a few hundred characters along paragraph and sentence boundaries (Chinese and Western punctuation)."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])|(?<=[.])\s+")
_BLANK = re.compile(r"\n\s*\n")
_CJK = re.compile(r"[\u3000-\u9fff\uff00-\uffef]")


def _join(sentences: list[str]) -> str:
    """Western sentences with a space between them, Chinese ones without."""
    out = ""
    for sentence in sentences:
        if out and not out.endswith("\n") and not (_CJK.match(out[-1]) and _CJK.match(sentence[0])):
            out += " "
        out += sentence
    return out


def _sentences(paragraph: str, limit: int) -> list[str]:
    pieces = [s.strip() for s in _SENTENCE_END.split(paragraph) if s and s.strip()]
    out = []
    for piece in pieces:
        while len(piece) > limit:  # a sentence with no end in sight: cut it
            out.append(piece[:limit])
            piece = piece[limit:]
        if piece:
            out.append(piece)
    return out


_END = re.compile(r"[.。!?！？;；:：,，、)）\]】\"”'’]$")


def _heading(line: str, following: str | None) -> bool:
    """A title line rather than part of a sentence: a markdown heading, or a short line with no punctuation at its
    end that is a paragraph of its own or is followed by a line that starts a sentence (PDF and Word titles).
    Wrapped lines of a sentence fill the page width and are longer."""
    if line.startswith("#"):
        return True
    if len(line) > 60 or _END.search(line):
        return False
    if following is None:
        return True
    # Chinese wraps lines anywhere: only a title in a paragraph of its own counts there
    return not _CJK.search(line[-1:]) and (following[:1].isupper() or following[:1].isdigit())


def _titled(lines: list[str], size: int) -> list[str]:
    """A paragraph's sentences; a title line is one of its own, ending with a line break that stays in the chunk
    (the model sees the title on its line, as in the document, and `sentences` knows it is a title)."""
    out: list[str] = []
    body: list[str] = []
    for n, line in enumerate(lines):
        if _heading(line, lines[n + 1] if n + 1 < len(lines) else None):
            if body:
                out += _sentences(_unwrap(body), size)
                body = []
            out.append(line[:size] + "\n")
        else:
            body.append(line)
    if body:
        out += _sentences(_unwrap(body), size)
    return out


def _unwrap(lines: list[str]) -> str:
    """Wrapped lines in one; CJK lines joined without the space a Western line break needs."""
    return re.sub(r"(?<=[\u3000-\u9fff\uff00-\uffef]) (?=[\u3000-\u9fff\uff00-\uffef])", "", " ".join(lines))


def sentences(text: str, limit: int = 400, titles: bool = True) -> list[str]:
    """The sentences of a passage (for quoting the one that answers); `titles=False` leaves out the title lines
    (inside a chunk a line break follows only a title)."""
    out: list[str] = []
    for paragraph in _BLANK.split(text):
        *titled, rest = paragraph.split("\n")
        for segment in titled:  # sentences, then the title that ends the segment
            *body, title = _sentences(" ".join(segment.split()), limit) or [""]
            out += body + ([title] if titles and title else [])
        out += _sentences(" ".join(rest.split()), limit)
    return out


def cut_quote(sentence: str, max_chars: int = 160) -> str:
    """A quote as shown with its citation: at most ``max_chars``."""
    return sentence if len(sentence) <= max_chars else sentence[: max_chars - 1] + "…"


def chunk_text(text: str, size: int = 400, overlap: int = 1) -> list[str]:
    """Pack sentences into chunks of at most ``size`` characters; ``overlap`` sentences repeat across a boundary."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    chunks: list[str] = []
    current: list[str] = []
    length = 0
    for paragraph in _BLANK.split(text):
        lines = [line.strip() for line in paragraph.split("\n") if line.strip()]
        if not lines:
            continue
        for sentence in _titled(lines, size):
            if current and length + len(sentence) + 1 > size:
                chunks.append(_join(current))
                current = current[-overlap:] if overlap else []
                if sum(len(s) + 1 for s in current) + len(sentence) > size:
                    current = []
                length = sum(len(s) + 1 for s in current)
            current.append(sentence)
            length += len(sentence) + 1
        # a paragraph boundary is a natural place to end a chunk once it holds something substantial
        if length > size // 2:
            chunks.append(_join(current))
            current, length = [], 0
    if current:
        chunks.append(_join(current))
    return [c for c in chunks if c.strip()]
