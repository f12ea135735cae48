"""A worker stopped with SIGTERM under load finishes what it holds and loses no usage; the
requests still waiting at the gate are served by the worker that takes its place. (A worker
killed with SIGKILL: `tests/faults/test_worker_killed.py`.)

This module stops the session's engine worker: it must run last (pytest orders the e2e
files by name, and the conftest puts this one at the end).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.clients import flood
from tests.e2e.usage_checks import client_totals, row_totals, wait_for_rows
from tests.stack import WORKER_SLOTS, EngineWorker
from workers import runtime

pytestmark = pytest.mark.slow

NUM_REQUESTS = 20  # per tenant: far more than the worker holds


def test_a_worker_stopped_mid_load_finishes_its_requests_and_its_successor_serves_the_rest(
    served: Any,
    light: Any,
    heavy: Any,
    engine_worker: EngineWorker,
    tiny_model: Path,
    tmp_path: Path,
    django_db_blocker: Any,
) -> None:
    accepted = threading.Semaphore(0)
    successor = EngineWorker(tiny_model, tmp_path / "successor.log", purge=False)
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(flood, served.url, key.secret, NUM_REQUESTS, 64, accepted.release)
            for _, key in (light, heavy)
        ]
        for _ in range(WORKER_SLOTS):  # the worker holds its slots; the rest wait at the gate
            assert accepted.acquire(timeout=60)
        exit_code = engine_worker.terminate()
        capacity_without_worker = runtime.gate().state().capacity
        with django_db_blocker.unblock():
            successor.start()
        results = [result for run in runs for result in run.result()]
    successor_exit_code = successor.terminate()

    assert (exit_code, successor_exit_code) == (0, 0)
    assert capacity_without_worker == 0  # a stopping worker leaves the pool at once
    assert not engine_worker.leftovers, "an engine process outlived its worker"
    assert not successor.leftovers, "an engine process outlived its worker"
    assert all(r.status == 200 and r.error is None and r.usage for r in results)
    rows = wait_for_rows(r.request_id for r in results)
    assert len(rows) == 2 * NUM_REQUESTS
    assert row_totals(rows) == client_totals(results)
