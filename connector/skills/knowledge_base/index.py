"""A local vector index of a folder of documents, updated incrementally (only files that changed).

On disk (``index_dir``): ``manifest.json`` (per file: size, mtime, sha256, chunk count, store file) and one
``.npz`` per document (float16 vectors and the chunk texts). In memory: one matrix; search is a dot product,
which stays in milliseconds up to a few hundred thousand chunks - a departmental document share.
Writes are atomic (temporary file, then rename) and a lock file keeps two connector replicas from indexing the
same folder at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .chunking import chunk_text, sentences
from .loaders import SUPPORTED, DocumentError, load

log = logging.getLogger("connector.skills.knowledge_base")

FORMAT = 4  # 4: a title line keeps its line break in the chunk (chunking._titled)

# Everyday sentences with no company facts in them. multilingual-e5's similarities are compressed (unrelated
# Chinese text often scores 0.83 against a Chinese question), so a passage counts as relevant only when it is
# closer to the question than the closest of these is: a threshold that adapts to each question and language.
BACKGROUND = (
    "今天天气很好，我们去公园散步吧。", "请把这份文件发给我。", "会议改到下午三点。", "这个问题我需要再想一想。",
    "谢谢你的帮助。", "你好，最近怎么样？", "晚饭想吃什么？", "周末我们去看电影吧。", "这本书很有意思。",
    "我明天早上要早起。", "帮我写一段文字。", "给我讲个故事吧。",
    "The weather is nice today.", "Please send me the file.", "The meeting moved to 3pm.",
    "Thanks for your help.", "Hello, how are you?", "What should we have for dinner?",
    "Let's watch a movie this weekend.", "This book is interesting.", "Can you write a short text for me?",
    "Tell me a story.", "I need to think about this question.", "What time is it?",
)


class EmbedderLike(Protocol):
    dim: int
    model_id: str

    def passages(self, texts: list[str]) -> np.ndarray: ...

    def query(self, text: str) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Hit:
    text: str
    source: str  # file name, with the page for PDFs
    path: str  # relative to the folder
    score: float


@dataclass
class ScanReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    chunks_embedded: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def summary(self) -> str:
        return (f"{len(self.added)} added, {len(self.updated)} updated, {len(self.removed)} removed, "
                f"{self.unchanged} unchanged, {len(self.failed)} failed; {self.chunks_embedded} chunks embedded "
                f"in {self.seconds:.1f} s")


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _contents(manifest: dict[str, Any]) -> dict[str, str]:
    return {rel: entry["sha256"] for rel, entry in manifest["files"].items()}


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class VectorIndex:
    def __init__(self, folder: Path, index_dir: Path, embedder: EmbedderLike, *, chunk_chars: int = 400,
                 chunk_overlap: int = 1) -> None:
        self.folder, self.index_dir, self.embedder = folder, index_dir, embedder
        self.params = {"format": FORMAT, "model": embedder.model_id, "chunk_chars": chunk_chars,
                       "chunk_overlap": chunk_overlap}
        self.chunk_chars, self.chunk_overlap = chunk_chars, chunk_overlap
        self.manifest: dict[str, Any] = {"params": self.params, "files": {}}
        # the matrix and (text, source, path) per row, swapped together so a search never sees half of a scan
        self._background: np.ndarray | None = None
        self._data: tuple[np.ndarray, list[tuple[str, str, str]]] = (np.zeros((0, embedder.dim), np.float32), [])

    # ---- on disk -------------------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.index_dir / "manifest.json"

    def _read_manifest(self) -> tuple[dict[str, Any], bool]:
        """The manifest on disk, and whether it is current (False: missing, unreadable, or other parameters)."""
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"params": self.params, "files": {}}, False
        if manifest.get("params") != self.params:  # another model or chunking: everything is re-embedded
            log.info("index parameters changed: rebuilding the whole index")
            return {"params": self.params, "files": {}}, False
        return manifest, True

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        with (self.index_dir / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def documents(self) -> dict[str, Path]:
        """Supported files under the folder (hidden files and the index itself excluded), by relative path."""
        found = {}
        index_dir = self.index_dir.resolve()
        for path in sorted(self.folder.rglob("*")):
            rel = path.relative_to(self.folder)
            if any(part.startswith((".", "~$")) for part in rel.parts):  # hidden, Office lock files
                continue
            if path.suffix.lower() not in SUPPORTED or not path.is_file():
                continue
            if index_dir in path.resolve().parents:
                continue
            found[rel.as_posix()] = path
        return found

    def _store_name(self, rel: str) -> str:
        return hashlib.sha1(rel.encode()).hexdigest()[:20] + ".npz"

    def _embed_file(self, rel: str, path: Path) -> tuple[np.ndarray, list[str], list[str]]:
        texts, sources = [], []
        for section in load(path):
            for chunk in chunk_text(section.text, self.chunk_chars, self.chunk_overlap):
                texts.append(chunk)
                sources.append(f"{path.name} ({section.location})" if section.location else path.name)
        if not texts:
            raise DocumentError(f"{rel}: no text")
        title = path.stem.replace("_", " ").replace("-", " ")
        vectors = self.embedder.passages([f"{title}\n{t}" for t in texts])
        return vectors, texts, sources

    def scan(self, progress: Callable[[int, int], None] | None = None) -> ScanReport:
        """Bring the index up to date with the folder; embeds only new and changed files. Blocking.

        ``progress(done, total)`` is called after each file (from this thread)."""
        started = time.monotonic()
        report = ScanReport()
        with self._locked():
            manifest, current = self._read_manifest()  # another replica may have brought it up to date
            dirty = not current
            files: dict[str, Any] = manifest["files"]
            for rel in [r for r, e in files.items() if not (self.index_dir / e["store"]).exists()]:
                files.pop(rel)  # its vectors were lost: embedded again below
                dirty = True
            present = self.documents() if self.folder.is_dir() else {}
            for rel in sorted(set(files) - set(present)):
                (self.index_dir / files.pop(rel)["store"]).unlink(missing_ok=True)
                report.removed.append(rel)
            for number, (rel, path) in enumerate(present.items()):
                if progress is not None:
                    progress(number, len(present))
                stat = path.stat()
                entry = files.get(rel)
                if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
                    report.unchanged += 1
                    continue
                digest = _sha256(path)
                if entry and entry["sha256"] == digest:  # touched, not changed
                    entry.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
                    report.unchanged += 1
                    dirty = True
                    continue
                try:
                    vectors, texts, sources = self._embed_file(rel, path)
                except DocumentError as exc:
                    report.failed[rel] = str(exc)
                    log.warning("knowledge base: %s", exc)
                    continue
                store = self._store_name(rel)
                _atomic_write(self.index_dir / store, lambda f: np.savez(
                    f, vectors=vectors.astype(np.float16), texts=np.array(texts), sources=np.array(sources)))
                files[rel] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest,
                              "chunks": len(texts), "store": store}
                (report.updated if entry else report.added).append(rel)
                report.chunks_embedded += len(texts)
            if progress is not None:
                progress(len(present), len(present))
            if dirty or report.changed:
                _atomic_write(self.manifest_path,
                              lambda f: f.write(json.dumps(manifest, ensure_ascii=False, indent=1).encode()))
            # the vectors in memory are read again only when the documents behind them changed
            reload = report.changed or _contents(manifest) != _contents(self.manifest)
            self.manifest = manifest
            if reload:
                self._load_matrix()
        report.seconds = time.monotonic() - started
        return report

    def load(self) -> None:
        """Use what is on disk now (fast start; a scan brings it up to date later)."""
        self.manifest = self._read_manifest()[0]
        self._load_matrix()

    def _load_matrix(self) -> None:
        blocks, meta = [], []
        for rel, entry in sorted(self.manifest["files"].items()):
            try:
                with np.load(self.index_dir / entry["store"], allow_pickle=False) as data:
                    blocks.append(data["vectors"].astype(np.float32))
                    meta += [(str(t), str(s), rel) for t, s in zip(data["texts"], data["sources"], strict=True)]
            except (OSError, KeyError, ValueError) as exc:
                log.warning("knowledge base: index entry for %s unreadable (%s): it will be rebuilt", rel, exc)
                self.manifest["files"].pop(rel, None)
        self._data = (np.concatenate(blocks) if blocks else np.zeros((0, self.embedder.dim), np.float32), meta)

    # ---- queries -------------------------------------------------------------------------------------------
    @property
    def size(self) -> tuple[int, int]:
        """(documents, chunks)"""
        return len(self.manifest["files"]), len(self._data[1])

    def embed_question(self, question: str) -> np.ndarray:
        return self.embedder.query(question)

    def search(self, question: str | np.ndarray, top_k: int = 3, min_score: float = 0.0, margin: float = 1.0,
               lift: float | None = None, allow: Callable[[str], bool] | None = None) -> list[Hit]:
        """The best passages: at least ``min_score``, within ``margin`` of the best one, and (with ``lift``) at
        least that much closer to the question than the closest BACKGROUND sentence. With ``allow`` (a document's
        relative path -> may it be used), only passages of allowed documents, chosen among those alone: the
        others never count, not even as the best one the margin is measured from."""
        matrix, meta = self._data
        if not meta:
            return []
        query = self.embedder.query(question) if isinstance(question, str) else question
        scores = matrix @ query
        if lift is not None:
            if self._background is None:
                self._background = self.embedder.passages(list(BACKGROUND))
            min_score = max(min_score, float((self._background @ query).max()) + lift)
        hits: list[Hit] = []
        seen = set()
        best: float | None = None
        for row in np.argsort(-scores):
            score = float(scores[row])
            if score < min_score or (best is not None and score < best - margin):
                break  # sorted: nothing further qualifies
            text, source, rel = meta[row]
            if allow is not None and not allow(rel):
                continue
            best = score if best is None else best
            if text in seen:
                continue
            seen.add(text)
            hits.append(Hit(text, source, rel, score))
            if len(hits) == top_k:
                break
        return hits

    def closest_sentences(self, question: str | np.ndarray, hits: list[Hit]) -> list[tuple[float, str]]:
        """For each hit, its sentence closest to the question (title lines left out) and its similarity;
        (-inf, "") for a hit with no sentence. One embedding pass serves the quotes and an extractive answer."""
        query = self.embedder.query(question) if isinstance(question, str) else question
        out: list[tuple[float, str]] = []
        for hit in hits:
            candidates = sentences(hit.text, titles=False) or sentences(hit.text)
            if not candidates:
                out.append((float("-inf"), ""))
                continue
            scores = self.embedder.passages(candidates) @ query
            k = int(np.argmax(scores))
            out.append((float(scores[k]), candidates[k]))
        return out
