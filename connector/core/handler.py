"""The handler: the skills in order (a skill may answer, add context, or pass), then the model, streamed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..skills.base import (
    Answer,
    Augment,
    ModelError,
    Passage,
    Skill,
    SkillContext,
    SkillServices,
)
from ..types import IncomingMessage, Turn
from .messages import MODEL_FAILED, SOURCE_QUOTE, SOURCES
from .repetition import without_repeated_tail
from .sink import ReplySink
from .store import ContextStore
from .trail import Cited, current

log = logging.getLogger("connector.handler")


@dataclass
class HandlerHooks:
    """Metrics callbacks (kept as plain callables so the core does not import prometheus)."""

    on_model_error: Callable[[], None] = lambda: None
    on_reply_done: Callable[[float], None] = lambda seconds: None
    on_skill: Callable[[str, str], None] = lambda skill, outcome: None  # outcome: answer, augment, error


def render_context(augments: Sequence[Augment], passages: Sequence[Passage]) -> str:
    """The skills' instructions, then the numbered passages with their sources."""
    parts = [a.instructions for a in augments if a.instructions]
    if passages:
        parts.append("\n\n".join(f"[{n}] ({p.source})\n{p.text}" for n, p in enumerate(passages, 1)))
    return "\n\n".join(parts)


def citations(passages: Sequence[Passage]) -> str:
    """The sources under the answer: file names, each with the quoted sentence that answers, where there is one."""
    quotes: dict[str, str] = {}
    for p in passages:
        if p.source not in quotes or (p.quote and not quotes[p.source]):
            quotes[p.source] = p.quote
    if not quotes:
        return ""
    if not any(quotes.values()):
        return f"\n\n**{SOURCES()}**: " + "; ".join(f"`{s}`" for s in quotes)
    lines = [f"{n}. " + (SOURCE_QUOTE(source=f"`{source}`", quote=quote) if quote else f"`{source}`")
             for n, (source, quote) in enumerate(quotes.items(), 1)]
    return f"\n\n**{SOURCES()}**\n\n" + "\n".join(lines)


class ChatHandler:
    def __init__(self, *, services: SkillServices, store: ContextStore, sink: ReplySink, skills: Sequence[Skill],
                 system_prompt: str, max_tokens: int, context_window: int | None, group_context_per_sender: bool,
                 hooks: HandlerHooks | None = None, turns_with_documents: int | None = None,
                 trim_loops: bool = False) -> None:
        self.services, self.store, self.sink = services, store, sink
        self.model = services.model
        self.skills = list(skills)
        self.system_prompt = system_prompt
        self.max_tokens = max_tokens
        self._window = context_window
        self.group_context_per_sender = group_context_per_sender
        self.hooks = hooks or HandlerHooks()
        self.turns_with_documents = turns_with_documents  # history kept when passages come with the question
        self.trim_loops = trim_loops  # the loop guard is on: show (and keep) an answer without its repeated tail

    def context_key(self, message: IncomingMessage) -> str:
        if message.conversation_kind == "group" and self.group_context_per_sender:
            return f"{message.platform}:{message.conversation_id}:{message.sender_id}"
        return f"{message.platform}:{message.conversation_id}"

    async def __call__(self, message: IncomingMessage) -> None:
        key = self.context_key(message)
        trail = current()
        ctx = SkillContext(message=message, services=self.services, context_key=key,
                           load_history=lambda: self.store.load(key), clear_history=lambda: self.store.clear(key),
                           departments=trail.departments if trail is not None else ())
        try:
            await self._run_skills(ctx)
        finally:
            if trail is not None:
                trail.denied.extend(ctx.denied)

    async def _run_skills(self, ctx: SkillContext) -> None:
        message, trail = ctx.message, current()
        for skill in self.skills:
            try:
                result = await skill.handle(ctx)
            except Exception:  # one broken skill must not silence the assistant
                log.exception("skill %s failed on %s; going on without it", skill.name, message.message_id)
                self.hooks.on_skill(skill.name, "error")
                continue
            if isinstance(result, Answer):
                self.hooks.on_skill(skill.name, "answer")
                if trail is not None:
                    trail.skill, trail.answer = skill.name, result.text
                await self.sink.send_text(message, result.text, result.title)
                return
            if isinstance(result, Augment):
                self.hooks.on_skill(skill.name, "augment")
                if trail is not None:
                    trail.skill = ",".join(filter(None, (trail.skill, skill.name)))
                ctx.augments.append(result)
        await self.answer(message, ctx.augments)

    async def _budget(self, max_tokens: int) -> int:
        window = self._window or await self.model.context_window() or 2048
        return max(64, window - max_tokens)

    async def build_messages(self, history: list[Turn], text: str, augments: Sequence[Augment] = (),
                             max_tokens: int | None = None) -> tuple[list[dict[str, str]], list[Passage]]:
        """System prompt and the skills' context + as much recent history as fits the window + the question.

        When space is short, old history goes first, then the last passages; the passages kept are returned
        (they are the ones cited)."""
        budget = await self._budget(max_tokens or self.max_tokens)
        turns = list(history)
        passages = [p for a in augments for p in a.passages]
        if passages and self.turns_with_documents is not None:
            turns = turns[-self.turns_with_documents:] if self.turns_with_documents else []
        while True:
            system = "\n\n".join(x for x in (self.system_prompt, render_context(augments, passages)) if x)
            messages = [{"role": "system", "content": system}] if system else []
            messages += [{"role": t.role, "content": t.content} for t in turns]
            messages.append({"role": "user", "content": text})
            estimate = sum(len(m["content"]) for m in messages) // 2 + 8 * len(messages)
            if estimate < budget // 2:
                return messages, passages  # comfortably inside: no need to count exactly
            count = await self.model.count_tokens(messages)
            size = count if count is not None else estimate
            if size <= budget or (not turns and not passages):
                return messages, passages
            if turns:
                turns = turns[2:] if len(turns) >= 2 else []  # drop the oldest exchange
            else:
                passages = passages[:-1]

    async def answer(self, message: IncomingMessage, augments: Sequence[Augment] = ()) -> None:
        key, trail = self.context_key(message), current()
        history = await self.store.load(key)
        reply = self.sink.stream_reply(message)
        await reply.start()
        max_tokens = next((a.max_tokens for a in augments if a.max_tokens), None)
        log.debug("answering %s (history: %d turns, %d skill contexts)", message.message_id, len(history),
                  len(augments))
        text = ""
        ready = next((a.answer for a in augments if a.answer), "")
        try:
            if ready:  # a skill answered from the documents' own words: no model call
                text, passages = ready, [p for a in augments for p in a.passages]
            else:
                messages, passages = await self.build_messages(history, message.text.strip(), augments, max_tokens)
                stream = self.model.stream_chat(messages, max_tokens=max_tokens)
                try:
                    async for delta in stream:
                        text += delta
                        reply.update(text)
                        if reply.cancelled:
                            log.info("reply to %s can no longer be shown: generation stopped", message.message_id)
                            break
                finally:
                    await stream.aclose()  # closes the HTTP stream: the server stops generating
        except ModelError as exc:
            log.warning("model failed for %s: %s", message.message_id, exc)
            self.hooks.on_model_error()
            if trail is not None:
                trail.refuse("failed", "model")
                trail.answer = text
            await reply.fail(MODEL_FAILED(), partial=text)
            return
        if self.trim_loops:
            text = without_repeated_tail(text)
        if not reply.cancelled and not text.strip():
            if trail is not None:
                trail.refuse("failed", "empty_answer")
            await reply.fail(MODEL_FAILED(), partial="")
            self.hooks.on_model_error()
            return
        if trail is not None:
            trail.answer = text
            trail.cited = [Cited(p.source, p.score) for p in passages]
        notes = "".join(f"\n\n{a.note}" for a in augments if a.note)
        await reply.finish(text + citations(passages) + notes)
        log.debug("answered %s: %d characters, %d passages cited", message.message_id, len(text), len(passages))
        self.hooks.on_reply_done(time.monotonic() - message.received_at)
        if text.strip():
            await self.store.append(key, [Turn("user", message.text.strip()), Turn("assistant", text)])
