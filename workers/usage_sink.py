"""The worker's accounting port: buffer each request's usage in memory, write it in batches.

`UsageSink.record()` only appends to a list; a background thread hands the buffer to a
`UsageStore` about once a second, one transaction per batch. A batch that cannot be written
stays buffered and is retried with backoff; rows still unwritten when the worker stops are
spilled to a JSON Lines file that the next `start()` replays. Stores are idempotent by
request id, so a replayed or retried row is stored and rolled up exactly once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from workers.accounting import MinuteKey, MinuteTotals, RequestUsage, dedupe, roll_up
from workers.usage_store_db import DatabaseUsageStore

__all__ = [
    "DEFAULT_SPILL_DIR",
    "DatabaseUsageStore",
    "MemoryUsageStore",
    "StoreUnavailable",
    "UsageSink",
    "UsageStore",
]

logger = logging.getLogger(__name__)

DEFAULT_SPILL_DIR = Path(__file__).resolve().parent.parent / "var" / "usage-spill"


class UsageStore(Protocol):
    """Where usage rows end up. Both methods are called from the sink's threads."""

    def write(self, batch: Sequence[RequestUsage]) -> int:
        """Store `batch` in one transaction and return how many rows were new.

        Idempotent: a request id already stored (or repeated within the batch) changes
        nothing, neither the row nor the rollups. On error nothing is stored.
        """
        ...

    def release(self) -> None:
        """Let go of what the calling thread holds (its database connection)."""
        ...


class StoreUnavailable(RuntimeError):
    """The injected failure of `MemoryUsageStore`: the store is 'down'."""


class MemoryUsageStore:
    """A real, in-process store with the same semantics as the database one.

    For embedded tests and as the benchmark's baseline. `fail_next()` and `go_down()` inject
    failures, so retry and spill paths can be exercised without breaking a database.
    """

    def __init__(self) -> None:
        self.rows: dict[str, RequestUsage] = {}
        self.minutes: dict[MinuteKey, MinuteTotals] = {}
        self.num_writes = 0
        self._num_failures_left = 0.0
        self._lock = threading.Lock()

    def fail_next(self, count: int = 1) -> None:
        self._num_failures_left = count

    def go_down(self) -> None:
        self._num_failures_left = math.inf

    def come_back(self) -> None:
        self._num_failures_left = 0

    def write(self, batch: Sequence[RequestUsage]) -> int:
        with self._lock:
            if self._num_failures_left > 0:
                self._num_failures_left -= 1
                raise StoreUnavailable("usage store is down (injected failure)")
            fresh = [usage for usage in dedupe(batch) if usage.request_id not in self.rows]
            for usage in fresh:
                self.rows[usage.request_id] = usage
            for key, totals in roll_up(fresh).items():
                self.minutes.setdefault(key, MinuteTotals()).merge(totals)
            self.num_writes += 1
            return len(fresh)

    def release(self) -> None:
        pass


def check_usage(usage: RequestUsage) -> None:
    """Refuse a row the store could never write, at record() time rather than forever after."""
    numbers = (usage.kv_block_seconds, usage.kv_gib_seconds, usage.queue_s, usage.latency_s)
    if not all(math.isfinite(x) for x in (*numbers, usage.finished_at, usage.ttft_s or 0.0)):
        raise ValueError(f"request {usage.request_id}: usage times must be finite numbers")
    if usage.kv_block_seconds < 0 or usage.kv_gib_seconds < 0:
        raise ValueError(f"request {usage.request_id}: KV usage must be >= 0")
    if not 1 <= len(usage.request_id) <= 100:
        raise ValueError(f"request id {usage.request_id!r} must be 1 to 100 characters")
    if not 1 <= len(usage.model) <= 200 or len(usage.app or "") > 100:
        raise ValueError(f"request {usage.request_id}: model or app name too long (200/100)")


class SpillFiles:
    """Rows that could not be written before shutdown, as JSON Lines files in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def pending(self) -> list[Path]:
        return sorted(self.folder.glob("usage-*.jsonl")) if self.folder.is_dir() else []

    def save(self, rows: Sequence[RequestUsage]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"usage-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        path = self.folder / name
        # Written aside and renamed: a crash mid-write never leaves a half file to replay.
        partial = path.with_suffix(".partial")
        with partial.open("w", encoding="utf-8") as out:
            out.writelines(json.dumps(row.to_dict()) + "\n" for row in rows)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(path)
        return path

    @staticmethod
    def load(path: Path) -> list[RequestUsage] | None:
        """The file's rows, or None when it cannot be read back (then it is set aside)."""
        try:
            with path.open(encoding="utf-8") as lines:
                return [RequestUsage.from_dict(json.loads(line)) for line in lines if line.strip()]
        except (ValueError, TypeError, KeyError):
            # Kept for a person to look at, but out of the way: it must not block replay.
            path.replace(path.with_suffix(".corrupt"))
            logger.exception("unreadable usage spill file, renamed to %s.corrupt", path.stem)
            return None


class UsageSink:
    """Buffers usage rows and writes them through a `UsageStore` in batches.

    `record()` is thread-safe and O(1): it never touches the store. Writes happen in
    `flush()`, on the background thread (`start()`) every `flush_interval_s`, or sooner when
    `max_batch` rows are waiting; each store write is one batch of at most `max_batch` rows.
    A failed write puts its rows back in front of the buffer and the thread retries after a
    backoff that doubles up to `max_backoff_s`: nothing is dropped.
    """

    def __init__(
        self,
        store: UsageStore,
        *,
        flush_interval_s: float = 1.0,
        max_batch: int = 2000,
        max_backoff_s: float = 30.0,
        spill_dir: Path | str = DEFAULT_SPILL_DIR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if flush_interval_s <= 0 or max_backoff_s <= 0:
            raise ValueError("flush_interval_s and max_backoff_s must be > 0")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.max_backoff_s = max_backoff_s
        self.spill = SpillFiles(Path(spill_dir))
        self.clock = clock
        self.num_recorded = 0
        self.num_flushes = 0
        self.num_rows_written = 0
        self.num_duplicates = 0
        self.num_failed_flushes = 0
        self.num_spilled = 0
        self.num_replayed = 0
        self._buffer: list[RequestUsage] = []
        self._lock = threading.Lock()  # guards the buffer and the counters
        self._flush_lock = threading.Lock()  # one store write at a time, in buffer order
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._num_failures_in_a_row = 0
        self._next_flush_at = 0.0

    @property
    def buffered(self) -> int:
        with self._lock:
            return len(self._buffer)

    def record(self, usage: RequestUsage) -> None:
        """Buffer one request's usage. Never blocks on the store."""
        check_usage(usage)
        with self._lock:
            if self._closed:
                raise RuntimeError("usage sink is closed")
            self._buffer.append(usage)
            self.num_recorded += 1
            full = len(self._buffer) % self.max_batch == 0
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Write everything buffered when called; return the number of new rows.

        Raises the store's error after putting the unwritten rows back in the buffer.
        """
        with self._flush_lock:
            return self._flush_locked()

    def start(self) -> None:
        """Replay spilled rows, then flush on a background thread until `close()`."""
        if self._thread is not None:
            raise RuntimeError("usage sink already started")
        try:
            self.replay_spilled()
        except Exception:
            logger.exception("replaying spilled usage failed; the flush thread will retry")
        self._next_flush_at = self.clock() + self.flush_interval_s
        self._thread = threading.Thread(target=self._run, name="usage-sink", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> int:
        """Stop the thread and write what is buffered, retrying until `timeout_s` passes.

        Rows still unwritten then go to a spill file. Returns how many rows were spilled.
        """
        deadline = self.clock() + timeout_s
        with self._lock:
            self._closed = True
        self._stop_thread(timeout_s)
        if self._flush_until(deadline):
            return 0
        return self._spill_buffer()

    def replay_spilled(self) -> int:
        """Write every spill file through the store, deleting each once it is written."""
        num_written = 0
        for path in self.spill.pending():
            rows = self.spill.load(path)
            if rows is None:
                continue
            for start in range(0, len(rows), self.max_batch):
                num_written += self._write(rows[start : start + self.max_batch])
            path.unlink(missing_ok=True)  # another worker on this host may have replayed it
            with self._lock:
                self.num_replayed += len(rows)
            logger.info("replayed %d spilled usage rows from %s", len(rows), path)
        return num_written

    # --- internals -------------------------------------------------------------------------

    def _flush_locked(self) -> int:
        with self._lock:
            num_left = len(self._buffer)
        num_written = 0
        # Only what was buffered on entry: under a steady stream of records, flush() ends.
        while num_left > 0:
            batch = self._take(min(num_left, self.max_batch))
            num_left -= len(batch)
            try:
                num_written += self._write(batch)
            except Exception:
                self._put_back(batch)
                raise
        return num_written

    def _write(self, batch: list[RequestUsage]) -> int:
        try:
            num_new = self.store.write(batch)
        except Exception:
            with self._lock:
                self.num_failed_flushes += 1
            raise
        with self._lock:
            self.num_flushes += 1
            self.num_rows_written += num_new
            self.num_duplicates += len(batch) - num_new
        return num_new

    def _take(self, count: int) -> list[RequestUsage]:
        with self._lock:
            batch = self._buffer[:count]
            del self._buffer[:count]
            return batch

    def _put_back(self, batch: list[RequestUsage]) -> None:
        with self._lock:
            self._buffer[:0] = batch  # in front: rows keep their order

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._wake.wait(max(0.0, self._next_flush_at - self.clock()))
                self._wake.clear()
                if not self._stopping.is_set() and self._due():
                    self._background_flush()
        finally:
            self.store.release()

    def _due(self) -> bool:
        if self.clock() >= self._next_flush_at:
            return True
        # A full buffer goes out early, but never during a backoff: that would hammer a
        # store that is down.
        return self._num_failures_in_a_row == 0 and self.buffered >= self.max_batch

    def _background_flush(self) -> None:
        try:
            if self.spill.pending():
                self.replay_spilled()
            self.flush()
        except Exception:
            self._num_failures_in_a_row += 1
            pause = self._backoff(self._num_failures_in_a_row)
            logger.warning(
                "usage flush failed (%d in a row), %d rows kept, retry in %.1fs",
                self._num_failures_in_a_row,
                self.buffered,
                pause,
                exc_info=True,
            )
            self._next_flush_at = self.clock() + pause
        else:
            self._num_failures_in_a_row = 0
            self._next_flush_at = self.clock() + self.flush_interval_s

    def _backoff(self, num_failures: int) -> float:
        return float(min(self.max_backoff_s, self.flush_interval_s * 2 ** (num_failures - 1)))

    def _stop_thread(self, timeout_s: float) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _flush_until(self, deadline: float) -> bool:
        # A flush thread stuck in the store past join() still holds the lock: wait no longer
        # than the deadline for it.
        if not self._flush_lock.acquire(timeout=max(0.0, deadline - self.clock())):
            return False
        try:
            return self._retry_flush_locked(deadline)
        finally:
            self._flush_lock.release()

    def _retry_flush_locked(self, deadline: float) -> bool:
        num_attempts = 0
        while True:
            try:
                self._flush_locked()
                return True
            except Exception:
                num_attempts += 1
                pause = min(self._backoff(num_attempts), deadline - self.clock())
                logger.warning("usage flush at close failed (attempt %d)", num_attempts)
                if pause <= 0:
                    return False
                time.sleep(pause)

    def _spill_buffer(self) -> int:
        rows = self._take(self.buffered)
        if not rows:
            return 0
        path = self.spill.save(rows)
        with self._lock:
            self.num_spilled += len(rows)
        logger.error("usage store unwritable at close: spilled %d rows to %s", len(rows), path)
        return len(rows)
