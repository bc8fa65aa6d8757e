"""The audit writer: takes finished trails without ever waiting, and stores them from its own thread.

`submit(trail)` (a trail consumer, called on the event loop) makes the record and puts it on a bounded queue;
it never blocks. A writer thread drains the queue in batches into the store. When the queue is full, or the
store fails (database down, disk full), the records go to the spill file (JSON lines, audit_spill_path)
instead, and are counted (`on_result("spilled", n)`, `on_failure()`): nothing accepted is lost. While the
store is failing, new records keep going to the spill file, in order; every `retry_s` the writer replays the
spill file into the chain, and it does so at start too, so the chain gets them as soon as the store is back.
With a retention period the writer also purges records older than that, at start and then daily.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..core.trail import Trail
from ..settings import ConnectorSettings
from .backend import open_store
from .records import AuditRecord, Recorder
from .store import SqlStore

log = logging.getLogger("connector.audit")

BATCH = 200
REPLAY_BATCH = 500
DAY_S = 86400.0


def recorder_for(settings: ConnectorSettings) -> Recorder:
    """The content mode and, with audit_mask_pii, the personal-data masker (connector/core/pii.py)."""
    masker = None
    if settings.audit_mask_pii:
        from ..core.pii import mask as masker
    return Recorder(content=settings.audit_content, mask_pii=settings.audit_mask_pii, masker=masker)


class SpillFile:
    """Records the store could not take, as JSON lines; thread-safe. Replaying moves the file aside first, so
    records spilled meanwhile start a new file and keep their order behind the replayed ones."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.replaying = self.path.with_name(self.path.name + ".replay")
        self.lock = threading.Lock()

    def add(self, records: list[AuditRecord]) -> None:
        lines = "".join(json.dumps(r.fields(), ensure_ascii=False) + "\n" for r in records)
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(lines)
                out.flush()
                os.fsync(out.fileno())

    def pending(self) -> bool:
        return self.replaying.exists() or (self.path.exists() and self.path.stat().st_size > 0)

    def take(self) -> list[AuditRecord]:
        """What is waiting, oldest first (a replay interrupted earlier comes before newer spills)."""
        with self.lock:
            if not self.replaying.exists():
                if not self.path.exists():
                    return []
                os.replace(self.path, self.replaying)
            elif self.path.exists():  # an interrupted replay, and newer spills: join them in order
                with self.replaying.open("a", encoding="utf-8") as out:
                    out.write(self.path.read_text(encoding="utf-8"))
                self.path.unlink()
            text = self.replaying.read_text(encoding="utf-8")
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(AuditRecord.from_fields(json.loads(line)))
                except (ValueError, TypeError, KeyError):
                    log.error("audit spill file %s line %d is not a record; kept in %s.bad", self.replaying, number,
                              self.path.name)
                    with self.path.with_name(self.path.name + ".bad").open("a", encoding="utf-8") as bad:
                        bad.write(line + "\n")
        return records

    def keep(self, records: list[AuditRecord]) -> None:
        """After a partial replay: what is still waiting (atomically replaces the replay file)."""
        tmp = self.replaying.with_name(self.replaying.name + ".tmp")
        tmp.write_text("".join(json.dumps(r.fields(), ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        os.replace(tmp, self.replaying)

    def done(self) -> None:
        self.replaying.unlink(missing_ok=True)


class AuditWriter:
    def __init__(self, store: SqlStore, recorder: Recorder, *, queue_size: int, spill_path: str | Path,
                 retention_days: int = 0, retry_s: float = 5.0,
                 on_result: Callable[[str, int], None] = lambda result, n: None,
                 on_failure: Callable[[], None] = lambda: None) -> None:
        self.store, self.recorder = store, recorder
        self.queue: queue.Queue[AuditRecord] = queue.Queue(maxsize=queue_size)
        self.spill = SpillFile(spill_path)
        self.retention_days, self.retry_s = retention_days, retry_s
        self.on_result, self.on_failure = on_result, on_failure
        self.down = False  # the store failed; records go to the spill file until a replay succeeds
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._next_retry = 0.0
        self._next_purge = 0.0

    @classmethod
    def from_settings(cls, settings: ConnectorSettings, **hooks: Callable) -> AuditWriter:
        return cls(open_store(settings), recorder_for(settings), queue_size=settings.audit_queue_size,
                   spill_path=settings.audit_spill_path, retention_days=settings.audit_retention_days, **hooks)

    # ---- the event loop's side: never blocks on the store ------------------------------------------
    def submit(self, trail: Trail) -> None:
        """A trail consumer: record the finished message."""
        self.submit_record(self.recorder.record(trail))

    def submit_record(self, record: AuditRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self._spill([record], "the audit queue is full")

    @property
    def backlog(self) -> int:
        return self.queue.qsize()

    def status(self) -> dict[str, object]:
        """For /health: the store (its kind, never its address or password), up or down (records spill to the
        file meanwhile, none lost), what waits in the queue and whether spilled records wait for a replay."""
        state = "down" if self.down else ("up" if self._thread.is_alive() else "stopped")
        return {"store": self.store.name, "state": state, "queued": self.backlog, "spilled": self.spill.pending()}

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued (or spill it), then end the thread. Blocking: call it off the event loop."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("audit writer still busy after %.0f s; %d records left queued", timeout, self.backlog)
            return
        rest = self._drain(10**9)
        if rest:  # never started, or submitted after the thread ended
            self._spill(rest, "the writer stopped")
        self.store.close()

    # ---- the writer thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        self._replay()
        while True:
            batch = self._drain(BATCH, wait=0.2)
            now = time.monotonic()
            if self.spill.pending() and (not self.down or now >= self._next_retry):
                self._replay()  # the spilled ones go into the chain before the newer batch
            if batch:
                self._write(batch)
            if self.retention_days and now >= self._next_purge and not self.down:
                self._purge()
            if self._stopping.is_set() and self.queue.empty():
                break

    def _drain(self, most: int, wait: float = 0.0) -> list[AuditRecord]:
        batch: list[AuditRecord] = []
        try:
            batch.append(self.queue.get(timeout=wait) if wait else self.queue.get_nowait())
            while len(batch) < most:
                batch.append(self.queue.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _write(self, batch: list[AuditRecord]) -> None:
        if self.down:  # until a replay succeeds; that keeps the records in order
            self._spill(batch, "")
            return
        try:
            self.store.append(batch)
        except Exception as exc:
            self._failed(exc)
            self._spill(batch, "")
        else:
            self.on_result("written", len(batch))

    def _replay(self) -> None:
        self._next_retry = time.monotonic() + self.retry_s
        try:
            records = self.spill.take()
        except OSError as exc:
            log.error("audit spill file %s cannot be read: %s", self.spill.path, exc)
            return
        while records:
            chunk = records[:REPLAY_BATCH]
            try:
                self.store.append(chunk)
            except Exception as exc:
                self._failed(exc)
                self.spill.keep(records)
                return
            records = records[len(chunk):]
            self.on_result("replayed", len(chunk))
        self.spill.done()
        if self.down:
            log.info("audit store is back: spilled records replayed into the chain")
        self.down = False

    def _failed(self, exc: Exception) -> None:
        self.on_failure()
        if not self.down:
            log.error("audit store %s failed (%s); records go to %s until it is back", self.store.name,
                      type(exc).__name__, self.spill.path)
        self.down = True
        self._next_retry = time.monotonic() + self.retry_s
        self.store.close()

    def _spill(self, records: list[AuditRecord], why: str) -> None:
        try:
            self.spill.add(records)
        except OSError as exc:  # nowhere left to put them: say so loudly
            self.on_failure()
            log.error("audit records lost: %d could not be spilled to %s (%s)", len(records), self.spill.path, exc)
            return
        if why:
            log.warning("%s: %d audit records spilled to %s", why, len(records), self.spill.path)
        self.on_result("spilled", len(records))

    def _purge(self) -> None:
        self._next_purge = time.monotonic() + DAY_S
        try:
            removed = self.store.purge(time.time() - self.retention_days * DAY_S)
        except Exception as exc:
            self._failed(exc)
            self._next_purge = time.monotonic() + self.retry_s
            return
        if removed:
            log.info("audit retention: %d records older than %d days purged", removed, self.retention_days)
