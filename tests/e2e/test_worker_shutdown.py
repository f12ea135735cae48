"""A worker stopped with SIGTERM under load finishes what it holds and loses no usage.

This module stops the session's engine worker: it must run last (pytest orders the e2e
files by name, and the conftest puts this one at the end).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.e2e.clients import flood
from tests.e2e.conftest import EngineWorker
from tests.e2e.usage_checks import client_totals, row_totals, wait_for_rows

pytestmark = pytest.mark.slow

NUM_REQUESTS = 20  # per tenant


def test_a_worker_stopped_with_sigterm_mid_load_finishes_its_requests_and_loses_no_usage(
    served: Any, light: Any, heavy: Any, engine_worker: EngineWorker
) -> None:
    accepted = threading.Semaphore(0)
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(flood, served.url, key.secret, NUM_REQUESTS, 64, accepted.release)
            for _, key in (light, heavy)
        ]
        for _ in range(2 * NUM_REQUESTS):  # every request is inside the worker
            assert accepted.acquire(timeout=60)
        exit_code = engine_worker.terminate()
        results = [result for run in runs for result in run.result()]

    assert exit_code == 0
    assert not engine_worker.leftovers, "an engine process outlived its worker"
    assert all(r.status == 200 and r.error is None and r.usage for r in results)
    rows = wait_for_rows(r.request_id for r in results)
    assert len(rows) == 2 * NUM_REQUESTS
    assert row_totals(rows) == client_totals(results)
