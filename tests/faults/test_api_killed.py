"""The API process killed with SIGKILL mid-stream: the seats its requests held at the gate
come free within one lease, and the worker aborts the requests nobody will read (billed
for what was computed until then), instead of running them to the end."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.e2e.clients import StreamResult, read_sse_line, stream_body
from tests.stack import wait_until
from usage.models import UsageRecord
from wire.gate import LEASE_S, REFRESH_S
from workers import runtime

pytestmark = pytest.mark.slow

NUM_RUNNING = 4  # the worker's slots: each one a long stream when the API dies
NUM_WAITING = 2  # queued at the gate behind them
MAX_TOKENS = 20_000  # far more than can be generated before the abort
WORKER_ENV = {"PARITY_WORKER_SLOTS": str(NUM_RUNNING), "PARITY_MAX_NUM_SEQS": str(NUM_RUNNING)}
# The worker aborts a request whose seat stayed missing for two renewals (`SeatWatch`).
ABORT_AFTER_FREED_S = 2 * REFRESH_S + 30  # plus the abort and the flush, on a busy box


def test_an_api_killed_mid_stream_frees_its_seats_within_a_lease_and_its_requests_stop(
    api: Any, light: Any, start_worker: Any, start_api: Any
) -> None:
    start_worker("worker", **WORKER_ENV)
    doomed = start_api()
    results = [StreamResult(0) for _ in range(NUM_RUNNING + NUM_WAITING)]
    for n, result in enumerate(results):
        threading.Thread(
            target=_stream, args=(doomed.url, light[1].secret, n, result), daemon=True
        ).start()
    wait_until(lambda: sum(r.output_tokens_received > 0 for r in results) == NUM_RUNNING)
    gate = runtime.gate()
    held_before = gate.state().tenants["light"]
    running = [r.request_id for r in results if r.output_tokens_received > 0]

    doomed.kill()
    killed_at = time.monotonic()
    time.sleep(LEASE_S)
    # One lease later they lapse, or a little after if the whole machine stood still
    # meanwhile (the gate forgives such a pause, `PAUSE_S`): wait for it, within bounds.
    wait_until(lambda: _held(gate) == (0, 0), timeout_s=LEASE_S + 30)
    freed_after_s = time.monotonic() - killed_at
    wait_until(
        lambda: UsageRecord.objects.filter(request_id__in=running).count() == NUM_RUNNING,
        timeout_s=ABORT_AFTER_FREED_S,
    )
    rows = list(UsageRecord.objects.filter(request_id__in=running))

    print(
        f"\nat the kill: {held_before.num_seated} seated, {held_before.num_queued} queued; "
        f"all freed {freed_after_s:.0f} s after the kill; "
        f"output billed per aborted request: {sorted(row.output_tokens for row in rows)}"
    )
    assert (held_before.num_seated, held_before.num_queued) == (NUM_RUNNING, NUM_WAITING)
    assert {row.status for row in rows} == {"aborted"}
    assert all(0 < row.output_tokens < MAX_TOKENS for row in rows)
    # The queued requests never reached a worker: nothing to bill.
    assert UsageRecord.objects.filter(tenant__slug="light").count() == NUM_RUNNING


def _held(gate: Any) -> tuple[int, int]:
    gate.heartbeat("fault-test-probe", 0, {})  # any gate call reaps what lapsed
    held = gate.state().tenants.get("light")
    return (0, 0) if held is None else (held.num_seated, held.num_queued)


def _stream(base_url: str, key: str, n: int, result: StreamResult) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    body = stream_body(f"long story {n}", MAX_TOKENS)
    try:
        with httpx.stream(
            "POST", f"{base_url}/v1/chat/completions", json=body, headers=headers, timeout=600
        ) as response:
            result.status = response.status_code
            for line in response.iter_lines():
                read_sse_line(result, line)
    except httpx.TransportError:
        pass  # the API died under it: expected
