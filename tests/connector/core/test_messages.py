"""The message catalogue: every entry in both languages, formatted with the settings' values."""

from __future__ import annotations

import re

import pytest

from connector.core import messages
from connector.core.messages import Text, duration
from connector.settings import ConnectorSettings
from connector.skills.base import SkillContext, SkillServices
from connector.skills.builtin import HelpSkill
from connector.skills.knowledge_base import KnowledgeBaseSkill
from connector.types import IncomingMessage

CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")  # Chinese characters and punctuation
ENTRIES = {name: value for name, value in vars(messages).items() if isinstance(value, Text)}
ENTRIES.update({f"MEDIA[{kind}]": text for kind, text in messages.MEDIA.items()})


def settings_values(settings: ConnectorSettings) -> dict[str, object]:
    """Every placeholder: from the settings where the value is a setting, else a sample."""
    return {"ttl": duration(settings.context_ttl_s), "limit": settings.max_message_chars,
            "length": settings.max_message_chars + 1, "kind": messages.MEDIA["picture"], "count": 2, "s": "s",
            "aliases": messages.either(["`/new`", "`新会话`"]), "command": "/reset", "text": "start over",
            "source": "`a.pdf`", "quote": "It opens at 7.", "version": "1.0", "python": "3.11", "platform": "DingTalk",
            "model": "m", "error": "HTTP 503",
            "health": "ok", "engine": "vllm", "device": "cpu", "names": "help", "summary": "1 added",
            "what": messages.QUOTA_MESSAGES.bind(count=settings.quota_user_messages_per_day or 50),
            "reset": f"00:00 ({settings.quota_timezone})", "department": "42",
            "files": messages.TEXT_ONLY_FILES, "name": "report.pdf", "size": messages.FILES_PAGES.bind(count=2, s="s"),
            "types": ".pdf, .docx, .txt, .md", "reason": messages.FILES_NO_TEXT,
            "ahead": 3, "wait": duration(settings.max_expected_wait_s)}


def test_there_is_a_catalogue() -> None:
    assert len(ENTRIES) > 40


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_entry_has_chinese_and_english_and_formats_with_the_settings(name: str) -> None:
    entry = ENTRIES[name]
    assert CJK.search(entry.zh), f"{name}: no Chinese"
    assert entry.en.strip() and not CJK.search(entry.en), f"{name}: no English"
    values = settings_values(ConnectorSettings())
    assert entry.fields <= set(values), f"{name}: a placeholder without a value: {entry.fields - set(values)}"
    shown = entry(**values)
    assert "{" not in shown and "}" not in shown
    for lang in ("zh", "en"):
        if "{" + lang + "}" in entry.layout:
            assert entry.language(lang, **values) in shown
    if entry.layout in (messages.PARAGRAPHS, messages.LINES):  # both shown in full: the same facts in each
        assert {f for f in entry.fields if f in entry.zh} == {f for f in entry.fields if f in entry.en}, name


def test_durations_in_words() -> None:
    assert duration(1800)() == "30 分钟 / 30 minutes"
    assert duration(3600)() == "1 小时 / 1 hour" and duration(7200).en == "2 hours"
    assert duration(60).en == "1 minute" and duration(90)() == "90 秒 / 90 seconds"


def test_the_texts_are_the_ones_shown_before() -> None:
    """The catalogue moved the texts; it did not change them."""
    assert messages.MODEL_FAILED() == (
        "抱歉，模型服务暂时不可用，请稍后再试。\n\n"
        "Sorry, the model service is unavailable right now; please try again in a moment.")
    assert messages.RESTARTING() == "服务正在重启，请稍后重新提问。\n\nThe assistant is restarting; please ask again in a moment."
    assert messages.RESET_DONE() == "好的，已开始新的会话。\n\nDone: the conversation starts afresh."
    assert messages.UNSUPPORTED(kind=messages.MEDIA["video"]) == \
        "暂不支持处理视频，请发送文字消息。\n\nSorry, I cannot read videos yet; please send text."
    assert messages.TOO_LONG(length=5000, limit=4000) == \
        "消息太长了（5000 字），请控制在 4000 字以内。\n\nYour message is too long (5000 characters); the limit is 4000."
    assert messages.KB_REINDEXED(summary="1 added") == "重新索引完成 / Re-indexed: 1 added"
    assert messages.REPLY_INTERRUPTED() == "（回复中断 / reply interrupted）"
    assert KnowledgeBaseSkill.description == "answers from the company's documents and cites them / 根据公司文档回答并注明出处"
    assert HelpSkill.commands == {"/help": "显示本帮助 / this help", "帮助": ""}


def _help_context(services: SkillServices) -> SkillContext:
    message = IncomingMessage(platform="test", message_id="m", delivery_id="d", conversation_id="c",
                              conversation_kind="dm", sender_id="u", sender_name="U", text="/help", msgtype="text")

    async def nothing() -> None:
        return None

    return SkillContext(message=message, services=services, context_key="k", load_history=nothing,  # type: ignore
                        clear_history=nothing)


@pytest.mark.parametrize("ttl_s, zh, en", [(1800, "（30 分钟）", "for 30 minutes."), (3600, "（1 小时）", "for 1 hour.")])
async def test_help_states_the_context_lifetime_from_the_settings(ttl_s: int, zh: str, en: str) -> None:
    settings = ConnectorSettings(context_ttl_s=ttl_s)
    services = SkillServices(model=None, skills=lambda: [], context_ttl_s=settings.context_ttl_s)
    answer = await HelpSkill(HelpSkill.config_model(enabled=True)).handle(_help_context(services))
    assert answer is not None and zh in answer.text and en in answer.text  # type: ignore[union-attr]
