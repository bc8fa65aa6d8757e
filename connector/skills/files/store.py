"""The files people sent in a conversation: read, chunked and embedded once, kept in memory per conversation
until its context expires (then dropped), searched for each later question.

Nothing is written to disk except for the moment a document is parsed (a private temporary folder, removed at
once): the knowledge base's loaders read paths. A conversation keeps at most ``max_documents`` (the oldest
goes first) and a document at most ``max_parts`` chunks (the rest is not read, and the user is told)."""

from __future__ import annotations

import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..knowledge_base.chunking import chunk_text, sentences
from ..knowledge_base.index import BACKGROUND, EmbedderLike
from ..knowledge_base.loaders import DocumentError, load


@dataclass(frozen=True)
class Document:
    name: str  # as the user sent it (shown in citations)
    texts: tuple[str, ...]
    sources: tuple[str, ...]  # "report.pdf (p. 3)"
    vectors: np.ndarray  # one row per text, normalised (e5)
    pages: int = 0  # PDF pages; 0 for other types
    truncated: bool = False  # more text than max_parts: only the first parts were read


@dataclass(frozen=True, slots=True)
class Found:
    text: str
    source: str
    score: float


def clean_name(name: str) -> str:
    """The file name as shown in a citation: no folders, no backticks or line breaks, at most 80 characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable() and ch not in "`*[]<>")
    return (base.strip() or "file")[:80]


def read_document(name: str, suffix: str, data: bytes, embedder: EmbedderLike, *, chunk_chars: int = 400,
                  chunk_overlap: int = 1, max_parts: int = 400) -> Document:
    """Parse, chunk and embed a sent file (blocking: run it in a thread). DocumentError when it cannot be read."""
    with tempfile.TemporaryDirectory(prefix="connector-file-") as folder:
        path = Path(folder) / f"document{suffix}"
        path.write_bytes(data)
        sections = load(path)
    name = clean_name(name)
    texts: list[str] = []
    sources: list[str] = []
    truncated = False
    for section in sections:
        for chunk in chunk_text(section.text, chunk_chars, chunk_overlap):
            if len(texts) == max_parts:
                truncated = True
                break
            texts.append(chunk)
            sources.append(f"{name} ({section.location})" if section.location else name)
    if not texts:
        raise DocumentError(f"{name}: no text")
    title = Path(name).stem.replace("_", " ").replace("-", " ")
    vectors = embedder.passages([f"{title}\n{t}" for t in texts])
    pages = len(sections) if suffix == ".pdf" else 0
    return Document(name, tuple(texts), tuple(sources), vectors, pages, truncated)


@dataclass
class _Entry:
    expires: float
    documents: list[Document] = field(default_factory=list)


class FileStore:
    """Documents per conversation (its context key), each conversation dropped ``ttl_s`` after its last use."""

    def __init__(self, ttl_s: float, max_documents: int = 5, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.max_documents, self.clock = ttl_s, max_documents, clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()  # searches run in worker threads

    def add(self, key: str, document: Document) -> None:
        """Keep it (a document of the same name is replaced); the conversation's lifetime starts again."""
        with self._lock:
            entry = self._live(key) or _Entry(0.0)
            entry.documents = [d for d in entry.documents if d.name != document.name] + [document]
            del entry.documents[:-self.max_documents]
            entry.expires = self.clock() + self.ttl_s
            self._entries[key] = entry
            self._entries.move_to_end(key)

    def documents(self, key: str, touch: bool = True) -> list[Document]:
        """The conversation's documents (none once expired); ``touch`` starts its lifetime again."""
        with self._lock:
            entry = self._live(key)
            if entry is None:
                return []
            if touch:
                entry.expires = self.clock() + self.ttl_s
            return list(entry.documents)

    def drop(self, key: str) -> int:
        """Forget the conversation's documents now (/reset); how many there were."""
        with self._lock:
            entry = self._entries.pop(key, None)
            return len(entry.documents) if entry else 0

    def sweep(self) -> int:
        """Drop every expired conversation; how many documents went."""
        with self._lock:
            now = self.clock()
            expired = [k for k, e in self._entries.items() if e.expires <= now]
            return sum(len(self._entries.pop(k).documents) for k in expired)

    @property
    def size(self) -> tuple[int, int]:
        """(conversations, documents) held now, expired ones included until the next sweep."""
        with self._lock:
            return len(self._entries), sum(len(e.documents) for e in self._entries.values())

    def _live(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires <= self.clock():
            del self._entries[key]
            return None
        return entry


class Searcher:
    """Passages of a conversation's documents closer to the question than everyday text (as the knowledge base
    judges: multilingual-e5's similarities are compressed, so the bar is the closest BACKGROUND sentence)."""

    def __init__(self, embedder: EmbedderLike) -> None:
        self.embedder = embedder
        self._background: np.ndarray | None = None

    def search(self, documents: list[Document], question: np.ndarray, top_k: int, min_score: float,
               lift: float | None) -> list[Found]:
        if not documents:
            return []
        matrix = np.concatenate([d.vectors for d in documents])
        meta = [(t, s) for d in documents for t, s in zip(d.texts, d.sources, strict=True)]
        if lift is not None:
            if self._background is None:
                self._background = self.embedder.passages(list(BACKGROUND))
            min_score = max(min_score, float((self._background @ question).max()) + lift)
        scores = matrix @ question
        found = []
        for row in np.argsort(-scores)[:top_k]:
            if float(scores[row]) < min_score:
                break
            found.append(Found(meta[row][0], meta[row][1], float(scores[row])))
        return found

    def quote(self, question: np.ndarray, text: str, max_chars: int = 160) -> str:
        """The passage's sentence closest to the question."""
        candidates = sentences(text)
        if not candidates:
            return ""
        best = candidates[int(np.argmax(self.embedder.passages(candidates) @ question))] if len(candidates) > 1 \
            else candidates[0]
        return best if len(best) <= max_chars else best[: max_chars - 1] + "…"
