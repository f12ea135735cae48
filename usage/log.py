"""A worker's usage rows on local disk: appended and fsync'd before a request is marked
done, read back by the sink in order, trimmed once the database has them.

Why a log and not a buffer: a row that lives only in memory until the next flush is lost
to a SIGKILL, an OOM kill or a PostgreSQL outage longer than the buffer can hold. Here a
finished request's usage is on disk before anyone is told it is done; the database is a
copy the sink catches up to, and memory holds at most one batch whatever the backlog.

Layout of one log (a folder): numbered segments `0000000000000001.jsonl`, one JSON object
per line, and `cursor`, the position up to which the database has every row (written
aside and renamed, so it is always whole). Each live log holds an exclusive `flock` on
its folder: a folder whose lock is free belongs to a dead process, and the next sink on
the host drains it (`orphans`). A line cut short by a crash was never acknowledged (its
fsync had not returned) and is cut off when the log is opened.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEGMENT_BYTES = 4 * 1024 * 1024
SUFFIX = ".jsonl"


class LogBusy(RuntimeError):
    """Another live process holds this log."""


@dataclass(frozen=True, order=True, slots=True)
class Position:
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the log: its text and where the line after it starts."""

    text: str
    end: Position


class UsageLog:
    def __init__(self, folder: Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.folder = folder
        self.segment_bytes = segment_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(folder / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise LogBusy(f"usage log {folder} is held by a live process") from None
        self._mutex = threading.Lock()  # appends, rotation and trimming
        self._cursor = self._read_cursor()
        segments = self._segments()
        self._segment = max(segments[-1] if segments else 1, self._cursor.segment)
        self._fd = self._open_tail(self._segment)

    # -- writing ---------------------------------------------------------------------------
    def append(self, row: dict[str, Any]) -> None:
        """Write one row and return once it is on disk."""
        # ensure_ascii: any text, lone surrogates and NULs included, round-trips as ASCII
        # escapes; whether the database can take it is the sink's question, not the log's.
        data = (json.dumps(row, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
        with self._mutex:
            if os.fstat(self._fd).st_size + len(data) > self.segment_bytes:
                self._rotate()
            os.write(self._fd, data)
            os.fsync(self._fd)

    def _rotate(self) -> None:
        os.close(self._fd)
        self._segment += 1
        self._fd = self._open_tail(self._segment)
        _fsync_folder(self.folder)

    # -- reading and trimming --------------------------------------------------------------
    def read(self, limit: int) -> list[Entry]:
        """Up to `limit` whole lines after the cursor, in the order they were appended."""
        entries: list[Entry] = []
        position = self._cursor
        while len(entries) < limit:
            path = self._path(position.segment)
            if not path.exists():
                break
            with path.open("rb") as segment:
                segment.seek(position.offset)
                for raw in segment:
                    if not raw.endswith(b"\n") or len(entries) == limit:
                        break
                    position = Position(position.segment, position.offset + len(raw))
                    entries.append(Entry(raw.decode("ascii", "replace").rstrip("\n"), position))
            if len(entries) == limit or position.segment >= self._segment:
                break
            position = Position(position.segment + 1, 0)
        return entries

    def commit(self, position: Position) -> None:
        """The database has every row before `position`: move the cursor, drop old segments."""
        with self._mutex:
            partial = self.folder / "cursor.partial"
            partial.write_text(json.dumps({"segment": position.segment, "offset": position.offset}))
            with partial.open("rb") as written:
                os.fsync(written.fileno())
            partial.replace(self.folder / "cursor")
            self._cursor = position
            for number in self._segments():
                if number < position.segment:
                    self._path(number).unlink(missing_ok=True)

    @property
    def backlog_bytes(self) -> int:
        """Bytes appended but not yet committed to the database."""
        total = 0
        for number in self._segments():
            if number >= self._cursor.segment:
                total += self._path(number).stat().st_size
        return max(0, total - self._cursor.offset)

    def close(self, *, remove: bool = False) -> None:
        """Let go of the folder; `remove` deletes it (a drained orphan)."""
        with self._mutex:
            os.close(self._fd)
            if remove:
                shutil.rmtree(self.folder, ignore_errors=True)
            os.close(self._lock_fd)

    # -- internals -------------------------------------------------------------------------
    def _path(self, number: int) -> Path:
        return self.folder / f"{number:016d}{SUFFIX}"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.folder.glob(f"*{SUFFIX}") if p.stem.isdigit())

    def _read_cursor(self) -> Position:
        try:
            data = json.loads((self.folder / "cursor").read_text())
            return Position(int(data["segment"]), int(data["offset"]))
        except FileNotFoundError:
            first = self._segments()
            return Position(first[0] if first else 1, 0)

    def _open_tail(self, number: int) -> int:
        """Open a segment for appending, cutting off a line a crash left unfinished."""
        path = self._path(number)
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_APPEND, 0o600)
        size = os.fstat(fd).st_size
        if size:
            with path.open("rb") as segment:
                data = segment.read()
            whole = data.rfind(b"\n") + 1
            if whole < size:
                os.ftruncate(fd, whole)
                os.fsync(fd)
        return fd


def orphans(base: Path, own: Path) -> Iterator[UsageLog]:
    """The logs under `base` left by processes that died (their lock is free), opened."""
    if not base.is_dir():
        return
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and p != own):
        try:
            yield UsageLog(folder)
        except LogBusy:
            continue


def _fsync_folder(folder: Path) -> None:
    # A new segment's name must survive a crash too, not only its contents.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
