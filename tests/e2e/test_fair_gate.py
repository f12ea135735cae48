"""Fair at the first queue: the pool's gate holds the backlog, end to end.

API (uvicorn, async gateway) -> the gate in Redis -> RabbitMQ -> real engine workers. Each
engine runs one sequence at a time with one more request in its own queue (WORKER_SLOTS =
2), so its serial order of finishing is the order in which the gate handed out seats.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.e2e.clients import async_flood, flood_without_streaming
from tests.e2e.usage_checks import in_service_order, service_while_backlogged
from tests.stack import WORKER_SLOTS, EngineWorker, tenant_with_key
from usage.models import UsageRecord
from workers import runtime

pytestmark = pytest.mark.slow
MAX_TOKENS = 32


def arrival(row: UsageRecord) -> float:
    return row.finished_at.timestamp() - row.latency_ms / 1000


def pool_capacity_reaches(capacity: int, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while runtime.gate().state().capacity != capacity:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def wait_until_queued(tenant: str, num_queued: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = runtime.gate().state().tenants.get(tenant)
        if state is not None and state.num_queued >= num_queued:
            return
        time.sleep(0.02)
    raise AssertionError(f"{tenant} never had {num_queued} requests queued at the gate")


def test_a_light_tenant_interleaves_at_its_weight_through_a_heavy_backlog(
    served: Any, plan: Any
) -> None:
    _, heavy_key = tenant_with_key("heavy", plan, weight=Decimal(1))
    _, light_key = tenant_with_key("light", plan, weight=Decimal(2))
    num_heavy, num_light = 40, 8
    with ThreadPoolExecutor(2) as pool:
        heavy_run = pool.submit(
            flood_without_streaming,
            served.url,
            heavy_key.secret,
            num_heavy,
            MAX_TOKENS,
            open_loop=True,
        )
        # Several times the pool's capacity waits behind the seats before light arrives.
        wait_until_queued("heavy", 10 * WORKER_SLOTS)
        light_run = pool.submit(
            flood_without_streaming,
            served.url,
            light_key.secret,
            num_light,
            MAX_TOKENS,
            open_loop=True,
        )
        heavy_results, light_results = heavy_run.result(), light_run.result()

    assert {r.status for r in heavy_results + light_results} == {200}
    rows = in_service_order(r.request_id for r in heavy_results + light_results)
    last_light = max(i for i, row in enumerate(rows) if row.tenant.slug == "light")
    # When the first light request reached the gateway (its row's finish less its latency).
    light_arrived = min(arrival(row) for row in rows if row.tenant.slug == "light")
    heavy_meanwhile = [
        row
        for row in rows[: last_light + 1]
        if row.tenant.slug == "heavy" and row.finished_at.timestamp() > light_arrived
    ]
    # Weights 1 : 2 and equal requests: one heavy start per two light ones, plus the seats
    # heavy already held when light arrived and the tie the lift leaves (the older head).
    allowed = num_light * 1 // 2 + WORKER_SLOTS + 1
    print(f"\nheavy requests served while light was: {len(heavy_meanwhile)} (allowed {allowed})")
    assert len(heavy_meanwhile) <= allowed
    heavy_queued_at_arrival = num_heavy - len(
        [r for r in rows if r.finished_at.timestamp() <= light_arrived]
    )
    assert heavy_queued_at_arrival > 2 * allowed  # FIFO would have served them all first


@pytest.fixture
def second_worker(
    engine_worker: EngineWorker, tiny_model: Path, tmp_path: Path, django_db_blocker: Any
) -> Iterator[EngineWorker]:
    worker = EngineWorker(tiny_model, tmp_path / "worker2.log", purge=False)
    with django_db_blocker.unblock():
        worker.start()
    try:
        yield worker
    finally:
        worker.terminate()


def test_two_workers_form_one_pool_that_splits_service_by_weight(
    second_worker: EngineWorker, served: Any, plan: Any
) -> None:
    # Both workers in the pool: on a loaded machine a heartbeat can come late and a worker
    # drop out for a moment (WORKER_TTL_S), so wait for the pool to form, then measure.
    assert pool_capacity_reaches(2 * WORKER_SLOTS)
    _, w1_key = tenant_with_key("w1", plan, weight=Decimal(1))
    _, w4_key = tenant_with_key("w4", plan, weight=Decimal(4))
    num_w1, num_w4 = 60, 120
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(
                flood_without_streaming, served.url, key.secret, n, MAX_TOKENS, open_loop=True
            )
            for key, n in ((w1_key, num_w1), (w4_key, num_w4))
        ]
        results = [r for run in runs for r in run.result()]

    assert {r.status for r in results} == {200}
    rows = in_service_order(r.request_id for r in results)
    service = service_while_backlogged(
        rows, skip=2 * WORKER_SLOTS, tenant="w4", num_requests=num_w4
    )
    share = service["w1"] / (service["w1"] + service["w4"])
    print(f"\ntwo workers, weights 1 : 4: served {share:.1%} : {1 - share:.1%}")
    assert share == pytest.approx(0.2, rel=0.10)


def test_a_flood_of_600_connections_gets_only_200s_and_429s_within_the_database_bound(
    served: Any, plan: Any, settings: Any
) -> None:
    settings.PARITY_TENANT_QUEUE_LIMIT = 50
    _, key = tenant_with_key("flooder", plan)
    peak = {"connections": 0}
    stop = threading.Event()

    def watch_connections() -> None:
        try:
            with connection.cursor() as cursor:
                while not stop.is_set():
                    cursor.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                        [connection.settings_dict["NAME"]],
                    )
                    peak["connections"] = max(peak["connections"], cursor.fetchone()[0])
                    time.sleep(0.05)
        finally:
            connection.close()

    watcher = threading.Thread(target=watch_connections)
    watcher.start()
    try:
        results = async_flood(served.url, key.secret, 600, 4)
    finally:
        stop.set()
        watcher.join()

    statuses = {r.status for r in results}
    codes = {(r.error or {}).get("code") for r in results if r.status == 429}
    print(
        f"\n600 connections: {sum(r.status == 200 for r in results)} x 200, "
        f"{sum(r.status == 429 for r in results)} x 429; peak connections {peak}"
    )
    assert statuses <= {200, 429}
    assert codes <= {"queue_full"}
    assert sum(r.status == 200 for r in results) >= 50
    # This process and the worker, each within its pool; the watcher's own; psql's slack.
    assert peak["connections"] <= 2 * settings.PARITY_DB_POOL_MAX + 2
