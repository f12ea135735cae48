"""Replay of recorded traces: CSV rows of `arrival_s,client,prompt_tokens,output_tokens`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from scheduler_core.job import Job

TRACE_COLUMNS = ("arrival_s", "client", "prompt_tokens", "output_tokens")
# Next to the code, so an installed package finds it without ../shared.
ARENA_TRACE_PATH = Path(__file__).resolve().parent.parent / "data" / "arena_trace.csv"


def arena_trace_text() -> str:
    """The bundled Arena trace (see scheduler_core/data/README.md)."""
    return ARENA_TRACE_PATH.read_text()


def load_trace_file(path: str | Path, *, prefix: str = "req") -> list[Job]:
    """Jobs from a CSV file; ValueError if it is missing or malformed."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ValueError(f"cannot read trace {path}: {error.strerror or error}") from error
    return parse_trace(text, source=str(path), prefix=prefix)


def parse_trace(text: str, *, source: str = "trace", prefix: str = "req") -> list[Job]:
    """Jobs from CSV text; the output length is forced (max_tokens = output_tokens)."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in TRACE_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{source}: missing column(s) {', '.join(missing)}")
    jobs = [_job(row, index, source, prefix) for index, row in enumerate(reader)]
    if not jobs:
        raise ValueError(f"{source}: no requests")
    return jobs


def _job(row: dict[str, str], index: int, source: str, prefix: str) -> Job:
    try:
        output_tokens = int(row["output_tokens"])
        return Job(
            request_id=f"{prefix}-{index}",
            tenant=row["client"],
            arrival_s=float(row["arrival_s"]),
            prompt_tokens=int(row["prompt_tokens"]),
            max_tokens=output_tokens,
            output_tokens=output_tokens,
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: row {index + 2}: {error}") from error
