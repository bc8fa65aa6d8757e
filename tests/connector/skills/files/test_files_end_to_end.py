"""Files end to end: a person sends a PDF from the emulator's chat page in a real Chromium, the connector process
downloads it through the robot file API, reads and embeds it, and answers a question about it with the real
inference server, citing the PDF; a picture gets the text-only reply; /reset deletes the file."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from connector.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from connector.skills.knowledge_base import SAMPLES

from ....servers import ServerProcess
from ...conftest import connector_process, start_connector
from ...helpers import finalized, shown_texts
from ...sandbox.helpers import emulator_view
from ...sandbox.test_chat_page import browser  # noqa: F401  (the real headless Chromium)

pytestmark = pytest.mark.slow

PDF = SAMPLES / "meridian-maintenance-handbook.pdf"  # invented facts: the model can only know them from the file
QUESTION = "How often must the HP-400 hydraulic press be recalibrated?"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


@pytest.fixture
def files_connector(emulator, inference: ServerProcess, log_dir: Path):
    # the chat page speaks as the emulator's default app: the connector runs on it
    proc = connector_process("connector-files", emulator=emulator, client_id=DEFAULT_CLIENT_ID,
                             secret=DEFAULT_CLIENT_SECRET, model_url=inference.url + "/v1",
                             plugins=json.dumps({"files": {"max_tokens": 64}}))
    start_connector(proc, log_dir, emulator, DEFAULT_CLIENT_ID)
    yield proc
    proc.stop()


def test_a_pdf_sent_in_the_chat_page_is_answered_from_and_cited(emulator, files_connector, browser) -> None:  # noqa: F811
    page = browser.new_page()
    page.goto(emulator.url + "/")
    page.fill("#user", "fileuser01")
    page.dispatch_event("#user", "change")
    conversation = httpx.get(emulator.url + "/sandbox/dm-id", params={"user": "fileuser01"}).json()["conversationId"]

    page.set_input_files("#file", str(PDF))
    page.wait_for_selector(".msg-user >> text=📎 meridian-maintenance-handbook.pdf", timeout=10_000)
    page.wait_for_selector(".msg-reply >> text=已收到《meridian-maintenance-handbook.pdf》（2 页）", timeout=120_000)
    assert "Got meridian-maintenance-handbook.pdf (2 pages); ask me about it" in page.inner_text("#timeline")
    downloads = [c for c in httpx.get(emulator.url + "/sandbox/calls",
                                      params={"path": "/v1.0/robot/messageFiles/download"}).json()
                 if c["app"] == DEFAULT_CLIENT_ID]
    assert downloads and downloads[-1]["status"] == 200

    page.fill("#input", QUESTION)
    page.click("#send")
    card = finalized(emulator, conversation, 1, timeout=120)[0]
    answer, _, sources = card["texts"]["msgContent"].partition("**来源 / Sources**")
    assert "`meridian-maintenance-handbook.pdf (p. 2)`" in sources and "450 operating hours" in sources, \
        card["texts"]["msgContent"]
    assert "450" in answer, answer  # the model's own words: only the PDF says so
    page.wait_for_selector('.msg-card[data-status="3"] >> text=meridian-maintenance-handbook.pdf (p. 2)',
                           timeout=10_000)  # the citation shows in the page's card

    # a picture: the model reads text only, and says so
    page.set_input_files("#file", files={"name": "photo.png", "mimeType": "image/png", "buffer": PNG})
    page.wait_for_selector(":is(.msg-reply, .msg-card) >> text=这个模型只能阅读文字，看不了图片", timeout=30_000)
    assert "This model reads text only: it cannot look at pictures" in page.inner_text("#timeline")

    # /reset deletes the file: the same question is no longer answered from it
    page.fill("#input", "/reset")
    page.click("#send")
    page.wait_for_selector(":is(.msg-reply, .msg-card) >> text=已开始新的会话", timeout=30_000)
    health = httpx.get(files_connector.url + "/health").json()["skills"]["files"]
    assert health["documents"] == 0, health
    page.fill("#input", QUESTION)
    page.click("#send")
    shown = shown_texts(emulator, conversation, 5, timeout=120)  # receipt, answer, picture, /reset, answer
    assert len(shown) == 5 and "meridian-maintenance-handbook.pdf" not in shown[4], \
        emulator_view(emulator, conversation)
