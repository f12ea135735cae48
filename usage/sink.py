"""The worker's accounting port: each request's usage on disk first, then in the database.

`UsageSink.record()` appends the row to this process's `UsageLog` and returns once it is
fsync'd: from then on a SIGKILL, an OOM kill or a database outage cannot lose it. A
background thread copies the log to a `UsageStore` about once a second, one transaction per
batch, and moves the log's cursor past what was committed. Memory holds one batch at most;
while the store is down the log grows on disk, and past `max_backlog_bytes` the sink says
it is `backlogged` (the worker then stops taking requests). Logs of dead processes on the
host are drained too. Stores are idempotent by request id, so a row replayed after a
crash is stored and rolled up exactly once.

No poison: a row that fails `check_usage`, or that the store refuses although it is up,
goes to the store's quarantine (with the error, for a person to fix and retry) and the
rows behind it go on. Only an outage (`is_outage`) makes the sink wait and retry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from usage.log import Entry, UsageLog, orphans
from usage.records import (
    MinuteKey,
    MinuteTotals,
    RequestUsage,
    dedupe,
    printable_text,
    roll_up,
)
from usage.store_db import DatabaseUsageStore

__all__ = [
    "DatabaseUsageStore",
    "MemoryUsageStore",
    "Quarantined",
    "StoreUnavailable",
    "UsageSink",
    "UsageStore",
]

logger = logging.getLogger(__name__)

MAX_COUNT = 2**63 - 1  # the columns are bigints


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A log line no store can take as it is, and why; `fingerprint` makes it idempotent."""

    payload: str
    error: str
    request_id: str
    source: str

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.payload.encode()).hexdigest()


class UsageStore(Protocol):
    """Where usage rows end up. The methods are called from the sink's threads."""

    def write(self, batch: Sequence[RequestUsage]) -> int:
        """Store `batch` in one transaction and return how many rows were new.

        Idempotent: a request id already stored (or repeated within the batch) changes
        nothing, neither the row nor the rollups. On error nothing is stored.
        """
        ...

    def quarantine(self, items: Sequence[Quarantined]) -> int:
        """Keep rows that cannot be stored, once per fingerprint; return how many were new."""
        ...

    def is_outage(self, error: BaseException) -> bool:
        """Whether `error` says the store is unreachable (retry later), not that the rows
        are bad (quarantine them)."""
        ...

    def release(self) -> None:
        """Let go of what the calling thread holds (its database connection)."""
        ...


class StoreUnavailable(RuntimeError):
    """The injected failure of `MemoryUsageStore`: the store is 'down'."""


class RowRefused(ValueError):
    """The injected refusal of `MemoryUsageStore`, as PostgreSQL refuses a NUL in text."""


class MemoryUsageStore:
    """A real, in-process store with the same semantics as the database one.

    For embedded tests and as the benchmark's baseline. `fail_next()` and `go_down()` inject
    failures, so retry and spill paths can be exercised without breaking a database.
    """

    def __init__(self) -> None:
        self.rows: dict[str, RequestUsage] = {}
        self.minutes: dict[MinuteKey, MinuteTotals] = {}
        self.quarantined: dict[str, Quarantined] = {}
        self.refused_apps: set[str] = set()  # rows with these apps are refused like poison
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
            refused = [u.request_id for u in batch if (u.app or "") in self.refused_apps]
            if refused:
                raise RowRefused(f"rows {refused} refused (injected)")
            fresh = [usage for usage in dedupe(batch) if usage.request_id not in self.rows]
            for usage in fresh:
                self.rows[usage.request_id] = usage
            for key, totals in roll_up(fresh).items():
                self.minutes.setdefault(key, MinuteTotals()).merge(totals)
            self.num_writes += 1
            return len(fresh)

    def quarantine(self, items: Sequence[Quarantined]) -> int:
        with self._lock:
            if self._num_failures_left > 0:
                raise StoreUnavailable("usage store is down (injected failure)")
            fresh = [item for item in items if item.fingerprint not in self.quarantined]
            self.quarantined.update((item.fingerprint, item) for item in fresh)
            return len(fresh)

    def is_outage(self, error: BaseException) -> bool:
        return isinstance(error, StoreUnavailable)

    def release(self) -> None:
        pass


def check_usage(usage: RequestUsage) -> None:
    """Refuse a row no store could take, naming the field: at the sink, before it can block
    the rows behind it."""
    rid = usage.request_id
    for name in ("kv_block_seconds", "kv_gib_seconds", "queue_s", "latency_s", "finished_at"):
        value = getattr(usage, name)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"request {rid!r}: {name} must be a finite number >= 0, not {value}")
    if usage.ttft_s is not None and not math.isfinite(usage.ttft_s):
        raise ValueError(f"request {rid!r}: ttft_s must be a finite number")
    for name in ("prompt_tokens", "cached_tokens", "output_tokens", "peak_blocks", "preemptions"):
        if getattr(usage, name) > MAX_COUNT:
            raise ValueError(f"request {rid!r}: {name} is beyond a 64-bit integer")
    if not 1 <= len(rid) <= 100:
        raise ValueError(f"request_id {rid!r} must be 1 to 100 characters")
    if not 1 <= len(usage.model) <= 200 or len(usage.app or "") > 100:
        raise ValueError(f"request {rid!r}: model (1-200) or app (0-100) has the wrong length")
    for name in ("request_id", "tenant", "model", "app"):
        text = getattr(usage, name) or ""
        if not printable_text(text):
            raise ValueError(f"request {rid!r}: {name} {text!r} is not printable UTF-8 text")


class UsageSink:
    """Usage rows through this process's log into a `UsageStore`, in batches.

    `record()` is thread-safe and returns once the row is on disk; it never touches the
    store. `flush()` (the background thread's, every `flush_interval_s`) copies what the
    logs hold, `max_batch` rows per store write, and commits each log's cursor after each
    write. An outage leaves the cursor where it is; the thread retries after a backoff that
    doubles up to `max_backoff_s`.
    """

    def __init__(
        self,
        store: UsageStore,
        *,
        log_dir: Path | str,
        flush_interval_s: float = 1.0,
        max_batch: int = 2000,
        max_backoff_s: float = 30.0,
        max_backlog_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if flush_interval_s <= 0 or max_backoff_s <= 0:
            raise ValueError("flush_interval_s and max_backoff_s must be > 0")
        if max_batch < 1 or max_backlog_bytes < 1:
            raise ValueError("max_batch and max_backlog_bytes must be >= 1")
        self.store = store
        self.log_dir = Path(log_dir)
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.max_backoff_s = max_backoff_s
        self.max_backlog_bytes = max_backlog_bytes
        self.clock = clock
        self.num_recorded = 0
        self.num_flushes = 0
        self.num_rows_written = 0
        self.num_duplicates = 0
        self.num_failed_flushes = 0
        self.num_quarantined = 0
        self.num_replayed = 0  # rows copied from the logs of dead processes
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.log = UsageLog(self.log_dir / name)
        self._lock = threading.Lock()  # guards the counters
        self._flush_lock = threading.Lock()  # one copy to the store at a time, in log order
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._num_failures_in_a_row = 0
        self._next_flush_at = 0.0

    # -- the worker's side -----------------------------------------------------------------
    def record(self, usage: RequestUsage) -> None:
        """Make one request's usage durable. A row that fails `check_usage` is kept too:
        the flush quarantines it, where a person can see it."""
        if self._closed:
            raise RuntimeError("usage sink is closed")
        self.log.append(usage.to_dict())
        with self._lock:
            self.num_recorded += 1

    @property
    def backlog_bytes(self) -> int:
        return self.log.backlog_bytes

    @property
    def backlogged(self) -> bool:
        """The store has fallen this far behind: take no more requests until it catches up."""
        return self.log.backlog_bytes > self.max_backlog_bytes

    # -- copying to the store --------------------------------------------------------------
    def flush(self) -> int:
        """Copy every row the logs hold now to the store; return the number of new rows.

        Raises the store's error on an outage; what was committed before stays committed.
        """
        with self._flush_lock:
            num_written = 0
            for orphan in orphans(self.log_dir, self.log.folder):
                num_written += self._drain(orphan, replayed=True)
                orphan.close(remove=True)
            return num_written + self._drain(self.log)

    def _drain(self, log: UsageLog, *, replayed: bool = False) -> int:
        num_written = 0
        while entries := log.read(self.max_batch):
            num_written += self._copy(entries, log)
            log.commit(entries[-1].end)
            if replayed:
                with self._lock:
                    self.num_replayed += len(entries)
            if len(entries) < self.max_batch:
                break
        return num_written

    def _copy(self, entries: list[Entry], log: UsageLog) -> int:
        """Write the batch's good rows and quarantine the rest."""
        rows, poison = self._parse(entries, str(log.folder.name))
        try:
            num_new = self._write(rows)
        except Exception as exc:
            if self.store.is_outage(exc):
                raise
            # Some row is refused: find it by writing the rest one at a time.
            num_new = 0
            for row in rows:
                try:
                    num_new += self._write([row])
                except Exception as row_exc:
                    if self.store.is_outage(row_exc):
                        raise
                    poison.append(_quarantined(row, row_exc, log))
        if poison:
            num_quarantined = self.store.quarantine(poison)
            with self._lock:
                self.num_quarantined += num_quarantined
            for item in poison:
                logger.error("usage of %r quarantined: %s", item.request_id, item.error)
        return num_new

    def _parse(
        self, entries: list[Entry], source: str
    ) -> tuple[list[RequestUsage], list[Quarantined]]:
        rows: list[RequestUsage] = []
        poison: list[Quarantined] = []
        for entry in entries:
            try:
                row = RequestUsage.from_dict(json.loads(entry.text))
                check_usage(row)
            except (ValueError, TypeError, KeyError) as exc:
                poison.append(Quarantined(entry.text, str(exc), _request_id(entry.text), source))
                continue
            rows.append(row)
        return rows, poison

    def _write(self, batch: list[RequestUsage]) -> int:
        if not batch:
            return 0
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

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Flush on a background thread until `close()`; the first flush replays the logs
        of dead processes."""
        if self._thread is not None:
            raise RuntimeError("usage sink already started")
        self._thread = threading.Thread(target=self._run, name="usage-sink", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> int:
        """Stop the thread and copy what the log holds, retrying until `timeout_s` passes.

        Returns how many bytes of rows are left in the log for the next start to copy.
        """
        deadline = self.clock() + timeout_s
        self._closed = True
        self._stop_thread(timeout_s)
        self._flush_until(deadline)
        left = self.log.backlog_bytes
        if left:
            logger.error(
                "usage store unreachable at close: %d bytes stay in %s", left, self.log.folder
            )
        self.log.close(remove=left == 0)
        return left

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._wake.wait(max(0.0, self._next_flush_at - self.clock()))
                self._wake.clear()
                if not self._stopping.is_set() and self.clock() >= self._next_flush_at:
                    self._background_flush()
        finally:
            self.store.release()

    def _background_flush(self) -> None:
        try:
            self.flush()
        except Exception:
            self._num_failures_in_a_row += 1
            pause = self._backoff(self._num_failures_in_a_row)
            logger.warning(
                "usage flush failed (%d in a row), %d bytes wait in the log, retry in %.1fs",
                self._num_failures_in_a_row,
                self.log.backlog_bytes,
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
        num_attempts = 0
        while True:
            try:
                self.flush()
                return True
            except Exception:
                num_attempts += 1
                pause = min(self._backoff(num_attempts), deadline - self.clock())
                logger.warning("usage flush at close failed (attempt %d)", num_attempts)
                if pause <= 0:
                    return False
                time.sleep(pause)


def _quarantined(row: RequestUsage, error: BaseException, log: UsageLog) -> Quarantined:
    payload = json.dumps(row.to_dict(), ensure_ascii=True, separators=(",", ":"))
    return Quarantined(payload, f"{type(error).__name__}: {error}", row.request_id, log.folder.name)


def _request_id(text: str) -> str:
    """The request id of a line that could not be read as a row, as far as it can be."""
    try:
        value = json.loads(text).get("request_id", "")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) and printable_text(value) else ""
