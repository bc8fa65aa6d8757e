"""Markdown that renders in DingTalk: hard line breaks, tables set apart, long texts split."""

from __future__ import annotations

import re

_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_BLOCK_START = re.compile(r"^\s*([-*+]\s|\d+[.)]\s|#{1,6}\s|>|```|\|)")


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
    """Chunks of at most `limit` characters, cut at paragraph or line boundaries, code fences kept whole."""
    if len(text) <= limit:
        return [text]
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
    fenced: list[str] = []
    for chunk in chunks:  # a chunk that opens a code fence it does not close gets it closed and reopened
        if chunk.count("```") % 2 == 1:
            chunk += "\n```"
            fenced.append(chunk)
            continue
        fenced.append(chunk)
    return fenced
