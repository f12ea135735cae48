"""Waiting for usage rows and comparing them with what clients were told."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from tests.e2e.clients import StreamResult
from usage.models import UsageRecord

# The sink flushes every second; give it room on a loaded two-core machine (a CI run once
# missed a row at 20 s: a wait that ends early only costs a failing run).
ROWS_TIMEOUT_S = 60


def wait_for_rows(request_ids: Iterable[str]) -> list[UsageRecord]:
    wanted = set(request_ids)
    deadline = time.monotonic() + ROWS_TIMEOUT_S
    while True:
        rows = list(UsageRecord.objects.filter(request_id__in=wanted))
        if len(rows) == len(wanted) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def client_totals(results: Iterable[StreamResult]) -> dict[str, int]:
    totals = {"prompt": 0, "cached": 0, "output": 0}
    for result in results:
        assert result.usage is not None, f"no usage reported for {result.request_id}"
        totals["prompt"] += result.usage["prompt_tokens"]
        totals["cached"] += result.usage["prompt_tokens_details"]["cached_tokens"]
        totals["output"] += result.usage["completion_tokens"]
    return totals


def row_totals(rows: Iterable[UsageRecord]) -> dict[str, int]:
    totals = {"prompt": 0, "cached": 0, "output": 0}
    for row in rows:
        totals["prompt"] += row.prompt_tokens
        totals["cached"] += row.cached_tokens
        totals["output"] += row.output_tokens
    return totals


def in_service_order(request_ids: Iterable[str]) -> list[UsageRecord]:
    """The requests' usage rows in the order engines finished them (one sequence at a
    time per engine: the order in which the gate handed out seats)."""
    ids = list(request_ids)
    rows = wait_for_rows(ids)
    assert len(rows) == len(ids), "every answered request is billed"
    return sorted(rows, key=lambda row: (row.finished_at, row.pk))


def service_while_backlogged(
    rows: list[UsageRecord], *, skip: int, tenant: str, num_requests: int
) -> dict[str, int]:
    """VTC's service (input + 2 x output tokens) per tenant, over the rows after the first
    `skip` (seated in arrival order, before anyone queued) and while `tenant` still had
    more than `skip` requests to go (so it was still waiting at the gate)."""
    service: dict[str, int] = {}
    seen = 0
    for row in rows[skip:]:
        if row.tenant.slug == tenant:
            seen += 1
            if seen > num_requests - 2 * skip:
                break
        service[row.tenant.slug] = (
            service.get(row.tenant.slug, 0) + row.prompt_tokens + 2 * row.output_tokens
        )
    return service


def billed_and_told(results: Iterable[StreamResult]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(prompt, output) tokens per request as billed (usage rows) and as each client was
    told (its usage), for the complete answers among `results`."""
    told = {
        r.request_id: (r.usage["prompt_tokens"], r.usage["completion_tokens"])
        for r in results
        if r.error is None and r.usage
    }
    rows = wait_for_rows(told)
    return {row.request_id: (row.prompt_tokens, row.output_tokens) for row in rows}, told
