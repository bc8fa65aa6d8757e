"""The emulator's chat page in a real headless Chromium: a person types, the bot's AI card streams in."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from connector.sandbox import SDK_AI_CARD_TEMPLATE

from .helpers import SdkBot

dingtalk_stream = pytest.importorskip("dingtalk_stream")
sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ANSWER = ["Here is a table:", "", "| city | country |", "| --- | --- |", "| Paris | France |", "| Berlin | Germany |",
          "", "First line  ", "second line"]


class StreamingBot(dingtalk_stream.AsyncChatbotHandler):
    def process(self, callback):
        message = dingtalk_stream.ChatbotMessage.from_dict(callback.data)
        replier = dingtalk_stream.AICardReplier(self.dingtalk_client, message)
        card = replier.start(SDK_AI_CARD_TEMPLATE, {})
        time.sleep(0.6)  # "thinking" is visible
        for n in range(1, len(ANSWER) + 1):
            replier.streaming(card, "msgContent", "\n".join(ANSWER[:n]), append=False, finished=False, failed=False)
            time.sleep(0.25)
        replier.streaming(card, "msgContent", "\n".join(ANSWER), append=False, finished=True, failed=False)


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (make test installs Debian's chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


def test_person_chats_and_watches_the_card_stream(emulator, browser, tmp_path: Path) -> None:
    # the page talks to the emulator's default app: run the bot on it, restoring nothing else
    from connector.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

    bot = SdkBot(emulator, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, StreamingBot()).start()
    try:
        page = browser.new_page()
        page.goto(emulator.url + "/")
        page.fill("#user", "pageuser01")
        page.dispatch_event("#user", "change")
        page.fill("#input", "Which capitals do you know?")
        page.click("#send")
        page.wait_for_selector(".msg-user >> text=Which capitals do you know?", timeout=10_000)
        page.wait_for_selector('.msg-card[data-status="1"] .thinking', timeout=10_000)
        page.wait_for_selector('.msg-card[data-status="2"]', timeout=10_000)  # streaming, not yet finished
        page.wait_for_selector('.msg-card[data-status="3"]', timeout=20_000)
        body = page.locator(".msg-card .card-body")
        assert body.locator("table td").all_inner_texts() == ["Paris", "France", "Berlin", "Germany"]
        assert body.locator("br").count() == 1  # two trailing spaces make a line break
        assert "bot connected" in page.inner_text("#conn")
        page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)
        if os.environ.get("SANDBOX_SCREENSHOT"):
            shutil.copy(tmp_path / "chat.png", os.environ["SANDBOX_SCREENSHOT"])

        # a group message without the @-mention never reaches the bot
        page.select_option("#mode", "group")
        page.uncheck("#at-bot")
        page.fill("#input", "just chatting")
        page.click("#send")
        page.wait_for_selector(".undelivered", timeout=10_000)
    finally:
        bot.stop()


def test_the_test_browser_renders_chinese(browser) -> None:
    """Without a CJK font every Chinese character is drawn as the same empty box, so two different
    strings of three characters give the same pixels."""
    page = browser.new_page()
    page.set_content("<canvas id=c width=200 height=40></canvas>")
    draw = """text => {
        const ctx = document.getElementById('c').getContext('2d');
        ctx.clearRect(0, 0, 200, 40); ctx.font = '24px sans-serif'; ctx.fillText(text, 4, 30);
        return Array.from(ctx.getImageData(0, 0, 200, 40).data).join(',');
    }"""
    assert page.evaluate(draw, "排队中") != page.evaluate(draw, "前面还"), \
        "Chinese renders as empty boxes in the test browser: install a CJK font (Debian's fonts-noto-cjk)"
