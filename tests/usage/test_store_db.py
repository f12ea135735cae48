"""DatabaseUsageStore: one transaction per batch, each request stored and rolled up once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import DatabaseError, connection
from django.db.models.functions import TruncMinute

from tenants.models import ApiKey, Tenant
from tests.tenants.factories import make_key, make_tenant
from tests.usage.factories import T, usage_of
from usage.models import UsageMinute, UsageRecord, UsageRecordStatus
from usage.records import RequestUsage, UsageStatus
from usage.sink import DatabaseUsageStore, MemoryUsageStore
from usage.store_db import UnknownTenant

ROOT = Path(__file__).resolve().parents[2]
SUMS = (
    "num_requests",
    "num_aborted",
    "num_errors",
    "num_with_ttft",
    "prompt_tokens",
    "cached_tokens",
    "output_tokens",
    "kv_gib_seconds",
    "preemptions",
    "queue_ms_sum",
    "ttft_ms_sum",
    "latency_ms_sum",
)


@pytest.fixture
def acme(db: None) -> Tenant:
    return make_tenant("acme")


@pytest.fixture
def globex(db: None) -> Tenant:
    return make_tenant("globex", weight=Decimal(2))


@pytest.fixture
def store() -> DatabaseUsageStore:
    return DatabaseUsageStore()


def minute_rows() -> list[dict[str, Any]]:
    return [dict(row) for row in UsageMinute.objects.order_by("minute", "tenant_id").values()]


def test_a_row_is_stored_in_the_columns_units(acme: Tenant, store: DatabaseUsageStore) -> None:
    key = make_key(acme).key
    usage = usage_of(acme, "r1", key=key, app="chat", kv_gib_seconds=0.1, ttft_s=0.0504)

    assert store.write([usage]) == 1

    row = UsageRecord.objects.get(request_id="r1")
    assert (row.tenant, row.api_key, row.app, row.status) == (acme, key, "chat", "finished")
    assert row.kv_gib_seconds == Decimal("0.100000000")  # not 0.1000000000000000055...
    assert (row.queue_ms, row.ttft_ms, row.latency_ms) == (10, 50, 500)
    assert row.finished_at.timestamp() == T + 1


def test_a_request_with_no_key_app_or_ttft_rolls_up_under_key_0_and_app_empty(
    acme: Tenant, store: DatabaseUsageStore
) -> None:
    store.write([usage_of(acme, status=UsageStatus.ERROR, ttft_s=None)])

    (minute,) = minute_rows()
    assert (minute["api_key_id"], minute["app"], minute["num_errors"]) == (0, "", 1)
    assert (minute["num_with_ttft"], minute["ttft_ms_sum"]) == (0, 0)
    assert UsageRecord.objects.get().ttft_ms is None


def test_a_duplicate_request_id_in_one_batch_is_stored_and_rolled_up_once(
    acme: Tenant, store: DatabaseUsageStore
) -> None:
    assert store.write([usage_of(acme, "dup"), usage_of(acme, "dup", output_tokens=999)]) == 1

    assert UsageRecord.objects.get().output_tokens == 50  # the first one wins
    (minute,) = minute_rows()
    assert (minute["num_requests"], minute["output_tokens"]) == (1, 50)


def test_a_duplicate_request_id_in_a_later_batch_changes_nothing(
    acme: Tenant, store: DatabaseUsageStore
) -> None:
    store.write([usage_of(acme, "dup"), usage_of(acme, "other")])
    before = minute_rows()

    assert store.write([usage_of(acme, "dup", output_tokens=999)]) == 0

    assert UsageRecord.objects.count() == 2
    assert minute_rows() == before


def varied_usage(tenants: list[Tenant], keys: list[ApiKey], count: int) -> list[RequestUsage]:
    """`count` requests over 3 minutes, 2 models, 2 apps, every status, some with no key."""
    statuses = list(UsageStatus)
    return [
        usage_of(
            tenants[i % len(tenants)],
            f"v{i}",
            key=[None, *keys][i % (len(keys) + 1)],
            model=("small", "large")[i % 2],
            app=(None, "chat")[i // 2 % 2],
            prompt_tokens=100 + i,
            cached_tokens=i % 50,
            output_tokens=7 * i,
            kv_gib_seconds=i / 1000,
            kv_block_seconds=i / 10,
            preemptions=i % 3,
            queue_s=i / 997,
            ttft_s=None if i % 5 == 0 else i / 331,
            status=statuses[i % len(statuses)],
            finished_at=T + (i * 0.77) % 180,
        )
        for i in range(count)
    ]


def sums_over_records() -> dict[tuple[Any, ...], dict[str, Any]]:
    expected: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for row in UsageRecord.objects.annotate(minute=TruncMinute("finished_at")):
        sums = expected[(row.minute, row.tenant_id, row.api_key_id or 0, row.model, row.app)]
        sums["num_requests"] += 1
        sums["num_aborted"] += row.status == UsageRecordStatus.ABORTED
        sums["num_errors"] += row.status == UsageRecordStatus.ERROR
        sums["num_with_ttft"] += row.ttft_ms is not None
        for name in ("prompt_tokens", "cached_tokens", "output_tokens", "preemptions"):
            sums[name] += getattr(row, name)
        sums["kv_gib_seconds"] += row.kv_gib_seconds
        sums["queue_ms_sum"] += row.queue_ms
        sums["ttft_ms_sum"] += row.ttft_ms or 0
        sums["latency_ms_sum"] += row.latency_ms
    return {key: dict(sums) for key, sums in expected.items()}


def test_rollup_sums_equal_the_sums_over_rows_per_minute_tenant_key_model_app(
    acme: Tenant, globex: Tenant, store: DatabaseUsageStore
) -> None:
    keys = [make_key(acme).key, make_key(globex).key]
    batch = varied_usage([acme, globex], keys, 300)
    store.write(batch[:120])
    store.write(batch[100:250])  # overlaps the first batch: 20 duplicates
    store.write(batch[240:])

    rollups = {
        (m.minute, m.tenant_id, m.api_key_id, m.model, m.app): m for m in UsageMinute.objects.all()
    }
    expected = sums_over_records()
    assert UsageRecord.objects.count() == 300
    assert set(rollups) == set(expected)
    for key, sums in expected.items():
        assert {name: getattr(rollups[key], name) for name in SUMS} == sums


def test_the_memory_store_rolls_up_exactly_like_the_database(
    acme: Tenant, globex: Tenant, store: DatabaseUsageStore
) -> None:
    batch = varied_usage([acme, globex], [], 200)
    memory = MemoryUsageStore()
    for part in (batch[:150], batch[50:]):
        assert store.write(part) == memory.write(part)

    in_memory = {
        (k.minute, k.tenant_id, k.api_key_id, k.model, k.app): {n: getattr(t, n) for n in SUMS}
        for k, t in memory.minutes.items()
    }
    in_database = {
        (int(m.minute.timestamp()), m.tenant_id, m.api_key_id, m.model, m.app): {
            n: getattr(m, n) for n in SUMS
        }
        for m in UsageMinute.objects.all()
    }
    assert in_memory == in_database


@pytest.mark.django_db(transaction=True)
def test_a_broken_connection_fails_the_write_and_a_later_write_stores_the_rows_once() -> None:
    acme = make_tenant("acme")
    store = DatabaseUsageStore()
    store.write([usage_of(acme, "before")])
    batch = [usage_of(acme, "a"), usage_of(acme, "b")]

    connection.ensure_connection()
    connection.connection.close()  # the socket dies under Django's feet
    with pytest.raises(DatabaseError):
        store.write(batch)

    assert store.write(batch) == 2
    assert store.write(batch) == 0
    assert UsageRecord.objects.count() == 3
    assert UsageMinute.objects.get().num_requests == 3


@pytest.mark.django_db(transaction=True)
def test_usage_of_a_deleted_key_is_kept_without_its_key() -> None:
    acme = make_tenant("acme")
    key = make_key(acme).key
    usage = usage_of(acme, "r1", key=key)
    key.delete()

    assert DatabaseUsageStore().write([usage, usage_of(acme, "r2")]) == 2

    assert UsageRecord.objects.get(request_id="r1").api_key is None
    assert UsageMinute.objects.get().api_key_id == 0


@pytest.mark.django_db(transaction=True)
def test_usage_of_a_deleted_tenant_is_refused_by_name() -> None:
    gone = make_tenant("gone")
    orphan = usage_of(gone, "orphan")
    gone.delete()

    with pytest.raises(UnknownTenant, match="no longer exists"):
        DatabaseUsageStore().write([orphan])

    assert UsageRecord.objects.count() == 0


def test_a_batch_is_written_in_few_statements_split_by_max_rows_per_statement(
    acme: Tenant,
) -> None:
    store = DatabaseUsageStore(max_rows_per_statement=10)
    batch = [usage_of(acme, finished_at=T + i * 7) for i in range(25)]  # over 3 minutes
    statements: list[str] = []

    def count(execute: Any, sql: str, *args: Any) -> Any:
        statements.append(sql)
        return execute(sql, *args)

    with connection.execute_wrapper(count):
        assert store.write(batch) == 25

    inserts = [sql for sql in statements if sql.startswith("INSERT")]
    assert len(inserts) == 3 + 1  # 25 records in chunks of 10, then 3 rollup rows at once
    assert UsageRecord.objects.count() == 25


def test_usage_status_choices_mirror_the_workers_statuses() -> None:
    assert {s.value for s in UsageRecordStatus} == {s.value for s in UsageStatus}


SQLITE_SCRIPT = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from tenants.models import Tenant
from usage.models import UsageMinute, UsageRecord
from tests.usage.factories import T, usage_of
from usage.sink import DatabaseUsageStore
acme = Tenant.objects.create(slug="acme", name="Acme")
store = DatabaseUsageStore()
first = store.write([usage_of(acme, "a"), usage_of(acme, "b"), usage_of(acme, "a")])
again = store.write([usage_of(acme, "b"), usage_of(acme, "c")])
minute = UsageMinute.objects.get()
print(first, again, UsageRecord.objects.count(), minute.num_requests, minute.output_tokens)
# Over SQLite's 999-parameter limit: split into several statements, still one transaction.
many = [usage_of(acme, f"m{i}", model=f"m{i % 7}", finished_at=T + i) for i in range(500)]
print(store.write(many), sum(UsageMinute.objects.values_list("num_requests", flat=True)))
"""


def test_the_same_sql_runs_on_sqlite_for_the_embedded_mode(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'embedded.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    result = subprocess.run(
        [sys.executable, "-c", SQLITE_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "1", "3", "3", "150", "500", "503"]


def test_rows_are_stamped_with_the_databases_clock_not_the_workers(
    acme: Tenant, store: DatabaseUsageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This worker's clock is an hour behind: the rollup job, which follows created_at with
    # a 60 s settle window, would leave its rows behind its cursor for good.
    from django.utils import timezone

    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() - timedelta(hours=1))

    store.write([usage_of(acme, "skewed")])

    with connection.cursor() as cursor:
        cursor.execute("SELECT CURRENT_TIMESTAMP")
        (database_now,) = cursor.fetchone()
    created_at = UsageRecord.objects.get(request_id="skewed").created_at
    assert abs((database_now - created_at).total_seconds()) < 60
