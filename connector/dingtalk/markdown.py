"""Markdown that renders in DingTalk: hard line breaks, tables set apart, long texts split."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_BLOCK_START = re.compile(r"^\s*([-*+]\s|\d+[.)]\s|#{1,6}\s|>|```|\|)")
_FENCE = re.compile(r"^(\s*)(`{3,}(?=[^`]*$)|~{3,})(.*)$")  # indent, fence, info string


def for_dingtalk(text: str) -> str:
    """DingTalk renders a single newline as a space: make each one a hard break (two trailing spaces),
    except inside code blocks, tables and around list items and headings; put a blank line before a table."""
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    in_code = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("```"):
            in_code = not in_code
            out.append(line)
            continue
        if in_code:
            out.append(line)
            continue
        is_row = bool(_TABLE_ROW.match(line))
        if is_row and out and out[-1].strip() and not _TABLE_ROW.match(out[-1]):
            out[-1] = out[-1].rstrip()
            out.append("")  # a table needs a blank line before it
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if (stripped and nxt.strip() and not is_row and not _BLOCK_START.match(line) and not _BLOCK_START.match(nxt)
                and not line.endswith("  ")):
            line = line.rstrip() + "  "
        out.append(line)
    return "\n".join(out)


def split_markdown(text: str, limit: int) -> list[str]:
    """Chunks of at most `limit` characters, cut at paragraph or line boundaries. A code block cut in two is
    closed at the end of one chunk and reopened (same fence, same info string) at the start of the next."""
    if len(text) <= limit:
        return [text]
    reserve = _fence_reserve(text)  # room for the closing and reopening fences a cut may need
    chunks = _split(text, limit - reserve if reserve < limit // 2 else limit)
    return _close_and_reopen(chunks) if reserve else chunks


def _split(text: str, limit: int) -> list[str]:
    chunks: list[str] = []
    current = ""
    for para in re.split(r"(\n\n)", text):
        if len(current) + len(para) <= limit:
            current += para
            continue
        if current.strip():
            chunks.append(current.strip("\n"))
        current = ""
        while len(para) > limit:
            cut = para.rfind("\n", 0, limit)
            cut = cut if cut > limit // 2 else limit
            chunks.append(para[:cut])
            para = para[cut:].lstrip("\n")
        current = para
    if current.strip():
        chunks.append(current.strip("\n"))
    return chunks


@dataclass(frozen=True, slots=True)
class _Fence:
    """An open code block: the line that opened it (with its info string) and its fence (``` or ~~~, or longer)."""

    opener: str
    indent: str
    run: str

    @property
    def closer(self) -> str:
        return self.indent + self.run

    def closed_by(self, line: str) -> bool:
        match = _FENCE.match(line)
        return bool(match) and not match.group(3).strip() and match.group(2).startswith(self.run)


def _opened(line: str) -> _Fence | None:
    match = _FENCE.match(line)
    return _Fence(line.rstrip(), match.group(1), match.group(2)) if match else None


def _fence_reserve(text: str) -> int:
    fences = [f for f in map(_opened, text.split("\n")) if f is not None]
    return max((len(f.opener) + len(f.closer) + 2 for f in fences), default=0)


def _fence_after(chunk: str, fence: _Fence | None) -> _Fence | None:
    """The code block still open at the end of `chunk`, given the one open at its start."""
    for line in chunk.split("\n"):
        if fence is None:
            fence = _opened(line)
        elif fence.closed_by(line):
            fence = None
    return fence


def _close_and_reopen(chunks: list[str]) -> list[str]:
    out: list[str] = []
    fence: _Fence | None = None
    for chunk in chunks:
        after = _fence_after(chunk, fence)
        if fence is not None:
            first, _, rest = chunk.partition("\n")
            chunk = rest if fence.closed_by(first) else fence.opener + "\n" + chunk  # cut right before its close
        if after is not None:
            chunk += "\n" + after.closer
        if chunk.strip():
            out.append(chunk)
        fence = after
    return out
