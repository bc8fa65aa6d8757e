"""Drive the real dingtalk-stream SDK against the emulator from tests."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx


def new_app(emulator, **config: Any) -> tuple[str, str]:
    """A fresh app (own credentials, so its connections and messages stay apart from other tests')."""
    client_id, secret = f"ding{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    r = httpx.post(emulator.url + "/sandbox/apps", json={"client_id": client_id, "client_secret": secret, **config})
    r.raise_for_status()
    return client_id, secret


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
             describe: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{describe()}" if describe else ""
            raise AssertionError(f"condition not met within {timeout} s{detail}")
        time.sleep(interval)


def emulator_view(emulator, conversation_id: str) -> str:
    """What the emulator saw of one conversation: for failure messages."""
    cards = httpx.get(emulator.url + "/sandbox/cards", params={"conversation_id": conversation_id}).json()
    replies = httpx.get(emulator.url + "/sandbox/replies", params={"conversation_id": conversation_id}).json()
    timeline = httpx.get(emulator.url + f"/sandbox/timeline/{conversation_id}").json()
    calls = [(round(c["time"], 2), c["path"], c["status"], str(c["answer"])[:80])
             for c in httpx.get(emulator.url + "/sandbox/calls").json()[-15:]]
    conns = httpx.get(emulator.url + "/sandbox/connections").json()[-4:]
    return (f"cards={cards}\nreplies={replies}\ntimeline={timeline}\nlast calls={calls}\n"
            f"connections={conns}\nacks={httpx.get(emulator.url + '/sandbox/acks').json()[-3:]}")


def live_connections(emulator, client_id: str) -> list[dict]:
    return [c for c in httpx.get(emulator.url + "/sandbox/connections").json()
            if c["app"] == client_id and not c["closed"]]


def send(emulator, client_id: str, text: str, **fields: Any) -> dict:
    r = httpx.post(emulator.url + "/sandbox/messages", json={"text": text, "app": client_id, **fields})
    r.raise_for_status()
    return r.json()


class SdkBot:
    """A DingTalkStreamClient running in its own thread and event loop."""

    def __init__(self, emulator, client_id: str, secret: str, handler: Any) -> None:
        import dingtalk_stream

        self.emulator, self.client_id = emulator, client_id
        self.client = dingtalk_stream.DingTalkStreamClient(dingtalk_stream.Credential(client_id, secret))
        self.client.register_callback_handler(dingtalk_stream.ChatbotMessage.TOPIC, handler)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.create_task(self.client.start())
        self.loop.run_forever()

    def start(self, wait: bool = True) -> SdkBot:
        self.thread.start()
        if wait:
            wait_for(lambda: live_connections(self.emulator, self.client_id))
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=0.2)
            for task in tasks:  # the SDK's start() swallows one cancel and sleeps: cancel again
                task.cancel()
            await asyncio.wait(tasks, timeout=0.2)
            self.loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        self.thread.join(5)
        httpx.post(self.emulator.url + "/sandbox/connections/drop", json={"app": self.client_id})
