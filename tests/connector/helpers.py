"""Shared helpers of the connector's end-to-end tests: what the emulator shows of a conversation, and a
connector process wired to it (the process helpers live in conftest.py with the fixtures)."""

from __future__ import annotations

import httpx

from .sandbox.helpers import emulator_view, wait_for


def cards_of(emulator, conversation_id: str) -> list[dict]:
    return httpx.get(emulator.url + "/sandbox/cards", params={"conversation_id": conversation_id}).json()


def replies_of(emulator, conversation_id: str) -> list[dict]:
    return httpx.get(emulator.url + "/sandbox/replies", params={"conversation_id": conversation_id}).json()


def finalized(emulator, conversation_id: str, count: int, timeout: float = 60) -> list[dict]:
    return wait_for(lambda: (c := [x for x in cards_of(emulator, conversation_id) if x["finalized"]])
                    and len(c) >= count and c, timeout=timeout,
                    describe=lambda: emulator_view(emulator, conversation_id))


def reply_texts(emulator, conversation_id: str, count: int, timeout: float = 30) -> list[str]:
    got = wait_for(lambda: (r := replies_of(emulator, conversation_id)) and len(r) >= count and r, timeout=timeout)
    return [r["content"].get("text") or r["content"].get("content") or "" for r in got]


def shown_texts(emulator, conversation_id: str, count: int, timeout: float = 60) -> list[str]:
    """The finished answers the asker sees, in order: markdown replies and finalized cards alike. A command or a
    notice sent while the conversation's previous message is still being finished goes into the card that says
    "queued" (that card is created at once), otherwise by markdown: which one is a race, what it says is not."""
    def finished() -> list[tuple[float, str]]:
        items = [(r["time"], r["content"].get("text") or r["content"].get("content") or "")
                 for r in replies_of(emulator, conversation_id)]
        items += [(c["created"], c["texts"].get("msgContent", "")) for c in cards_of(emulator, conversation_id)
                  if c["finalized"]]
        return sorted(items)

    got = wait_for(lambda: (items := finished()) and len(items) >= count and items, timeout=timeout,
                   describe=lambda: emulator_view(emulator, conversation_id))
    return [text for _, text in got]
