"""Writing results: the markdown table, the JSON document, per-request CSVs."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scheduler_core.app_experiment import AppCell
from scheduler_core.experiment import Cell

REQUEST_COLUMNS = (
    "request_id",
    "tenant",
    "arrival_s",
    "admitted_s",
    "first_token_s",
    "finish_s",
    "prompt_tokens",
    "output_tokens",
    "status",
)
_HEADER = (
    "| workload | policy | max diff | avg diff | throughput tok/s | rejected "
    "| TTFT p50 s | TTFT p99 s |\n|---|---|---:|---:|---:|---:|---:|---:|"
)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown_table(cells: Sequence[Cell]) -> str:
    rows = [_HEADER]
    for cell in cells:
        s = cell.summary
        rows.append(
            f"| {cell.workload.name} | {cell.policy} | {s.max_diff:.0f} | {s.avg_diff:.0f} "
            f"| {s.throughput_tok_s:.0f} | {s.rejected} | {_seconds(s.ttft_p50_s)} "
            f"| {_seconds(s.ttft_p99_s)} |"
        )
    return "\n".join(rows)


def json_document(profile: str, seed: int, cells: Sequence[Cell | AppCell]) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    for cell in cells:
        results.setdefault(cell.workload.name, {})[cell.policy] = cell.summary.as_dict()
    return {"profile": profile, "seed": seed, "results": results}


def write_json(document: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n")


def safe_name(name: str) -> str:
    """A file-name-safe form of a workload or policy name (trace:PATH has slashes)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def write_requests_csv(cell: Cell | AppCell, directory: Path) -> Path:
    """`<workload>__<policy>.csv`: one row per request."""
    path = directory / f"{safe_name(cell.workload.name)}__{safe_name(cell.policy)}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(REQUEST_COLUMNS)
        for r in cell.result.records:
            status = "finished" if r.finish_s is not None else "rejected"
            writer.writerow(
                (r.request_id, r.tenant, _cell(r.arrival_s), _cell(r.admitted_s))
                + (_cell(r.first_token_s), _cell(r.finish_s), r.prompt_tokens)
                + (r.output_tokens, status)
            )
    return path


_APP_HEADER = (
    "| workload | policy | mean s | p50 s | p99 s | max slowdown | Jain | throughput tok/s "
    "| max late s | over bound |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def app_markdown_table(cells: Sequence[AppCell]) -> str:
    rows = [_APP_HEADER]
    for cell in cells:
        s = cell.summary
        rows.append(
            f"| {cell.workload.name} | {cell.policy} | {s.mean_completion_s:.1f} "
            f"| {s.p50_completion_s:.1f} | {s.p99_completion_s:.1f} | {s.max_slowdown:.2f} "
            f"| {s.jain:.3f} | {s.throughput_tok_s:.0f} | {s.max_lateness_s:.1f} "
            f"| {s.bound_violations} |"
        )
    return "\n".join(rows)
