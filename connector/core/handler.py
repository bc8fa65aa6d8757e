"""The handler: exact commands, else the model with the conversation's context, streamed into a reply."""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import __version__
from ..types import IncomingMessage, Turn
from .model import ModelClient, ModelError
from .sink import ReplySink
from .store import ContextStore

log = logging.getLogger("connector.handler")

RESET_COMMANDS = frozenset({"/reset", "/new", "新会话", "重置"})
HELP_COMMANDS = frozenset({"/help", "帮助"})
TEST_COMMANDS = frozenset({"/test"})
MODEL_FAILED = ("抱歉，模型服务暂时不可用，请稍后再试。\n\n"
                "Sorry, the model service is unavailable right now; please try again in a moment.")
HELP_TEXT = """**私有助手 / Private assistant**

直接提问即可，我会记住本次会话的上下文（30 分钟）。
Ask anything; I remember this conversation for 30 minutes.

- `/reset`（或 `新会话`、`重置`、`/new`）：清空上下文 / start over
- `/test`：版本与模型状态 / version and model status
- `/help`：显示本帮助 / this help"""


@dataclass
class HandlerHooks:
    """Metrics callbacks (kept as plain callables so the core does not import prometheus)."""

    on_model_error: Callable[[], None] = lambda: None
    on_reply_done: Callable[[float], None] = lambda seconds: None


class ChatHandler:
    def __init__(self, *, model: ModelClient, store: ContextStore, sink: ReplySink, system_prompt: str,
                 max_tokens: int, context_window: int | None, group_context_per_sender: bool,
                 hooks: HandlerHooks | None = None, platform_name: str = "DingTalk") -> None:
        self.model, self.store, self.sink = model, store, sink
        self.system_prompt = system_prompt
        self.max_tokens = max_tokens
        self._window = context_window
        self.group_context_per_sender = group_context_per_sender
        self.hooks = hooks or HandlerHooks()
        self.platform_name = platform_name

    def context_key(self, message: IncomingMessage) -> str:
        if message.conversation_kind == "group" and self.group_context_per_sender:
            return f"{message.platform}:{message.conversation_id}:{message.sender_id}"
        return f"{message.platform}:{message.conversation_id}"

    async def __call__(self, message: IncomingMessage) -> None:
        command = message.text.strip()
        if command in RESET_COMMANDS:
            await self.store.clear(self.context_key(message))
            await self.sink.send_text(message, "好的，已开始新的会话。\n\nDone: the conversation starts afresh.", "新会话")
        elif command in HELP_COMMANDS:
            await self.sink.send_text(message, HELP_TEXT, "帮助 / Help")
        elif command in TEST_COMMANDS:
            await self.sink.send_text(message, await self._status(), "状态 / Status")
        else:
            await self.answer(message)

    async def _status(self) -> str:
        health = await self.model.health()
        version = health.get("version") or {}
        try:
            model = await self.model.model_id()
        except ModelError as exc:
            model = f"unavailable ({exc})"
        return "\n".join([
            "**连接正常 / Connector OK**", "",
            f"- connector: {__version__} (Python {platform.python_version()}, {self.platform_name} Stream mode)",
            f"- model: {model}",
            f"- inference server: {health.get('health')}" + (
                f", version {version.get('version')}, engine {version.get('engine')}, device {version.get('device')}"
                if version else ""),
        ])

    async def _budget(self) -> int:
        window = self._window or await self.model.context_window() or 2048
        return max(64, window - self.max_tokens)

    async def build_messages(self, history: list[Turn], text: str) -> list[dict[str, str]]:
        """System prompt + as much recent history as fits the model's window + the question."""
        budget = await self._budget()
        turns = list(history)
        while True:
            messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            messages += [{"role": t.role, "content": t.content} for t in turns]
            messages.append({"role": "user", "content": text})
            estimate = sum(len(m["content"]) for m in messages) // 2 + 8 * len(messages)
            if estimate < budget // 2:
                return messages  # comfortably inside: no need to count exactly
            count = await self.model.count_tokens(messages)
            size = count if count is not None else estimate
            if size <= budget or not turns:
                return messages
            turns = turns[2:] if len(turns) >= 2 else []  # drop the oldest exchange

    async def answer(self, message: IncomingMessage) -> None:
        key = self.context_key(message)
        history = await self.store.load(key)
        reply = self.sink.stream_reply(message)
        await reply.start()
        log.debug("answering %s (history: %d turns)", message.message_id, len(history))
        text = ""
        try:
            messages = await self.build_messages(history, message.text.strip())
            stream = self.model.stream_chat(messages)
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
            await reply.fail(MODEL_FAILED, partial=text)
            return
        if not reply.cancelled and not text.strip():
            await reply.fail(MODEL_FAILED, partial="")
            self.hooks.on_model_error()
            return
        await reply.finish(text)
        log.debug("answered %s: %d characters", message.message_id, len(text))
        self.hooks.on_reply_done(time.monotonic() - message.received_at)
        if text.strip():
            await self.store.append(key, [Turn("user", message.text.strip()), Turn("assistant", text)])
