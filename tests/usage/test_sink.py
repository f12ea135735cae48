"""UsageSink: record() puts the row on disk, flushes copy the log to the store in batches,
an outage is waited out, poison is quarantined, and a process killed with SIGKILL loses
nothing: the next sink on the host copies its log."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tenants.models import Tenant
from tests.tenants.factories import make_tenant
from tests.usage.factories import eventually, make_usage, usage_of
from usage import sink as usage_sink
from usage.models import QuarantinedUsage, UsageMinute, UsageRecord
from usage.sink import (
    DatabaseUsageStore,
    MemoryUsageStore,
    StoreUnavailable,
    UsageSink,
    UsageStore,
)


def make_sink(
    store: UsageStore, tmp_path: Path, *, max_batch: int = 2000, max_backlog_bytes: int = 2**30
) -> UsageSink:
    return UsageSink(
        store,
        log_dir=tmp_path / "usage-log",
        flush_interval_s=0.02,
        max_batch=max_batch,
        max_backlog_bytes=max_backlog_bytes,
    )


def pending(sink: UsageSink) -> int:
    """Rows in the sink's log that the store does not have yet."""
    return len(sink.log.read(10**6))


@pytest.fixture
def store() -> MemoryUsageStore:
    return MemoryUsageStore()


@pytest.fixture
def sink(store: MemoryUsageStore, tmp_path: Path) -> UsageSink:
    return make_sink(store, tmp_path)


def test_record_puts_the_row_in_the_log_and_leaves_the_store_alone(
    sink: UsageSink, store: MemoryUsageStore
) -> None:
    for _ in range(3):
        sink.record(make_usage())

    assert (pending(sink), sink.num_recorded, store.num_writes) == (3, 3, 0)
    assert sink.backlog_bytes > 0


def test_flush_copies_the_log_in_one_batch_and_empties_it(
    sink: UsageSink, store: MemoryUsageStore
) -> None:
    for _ in range(5):
        sink.record(make_usage())

    assert sink.flush() == 5
    assert (len(store.rows), store.num_writes, pending(sink), sink.backlog_bytes) == (5, 1, 0, 0)


def test_flush_splits_a_long_log_into_batches_of_max_batch(
    store: MemoryUsageStore, tmp_path: Path
) -> None:
    sink = make_sink(store, tmp_path, max_batch=4)
    for _ in range(10):
        sink.record(make_usage())

    sink.flush()

    assert (len(store.rows), store.num_writes, sink.num_flushes) == (10, 3, 3)


def test_a_duplicate_request_id_is_counted_as_a_duplicate(
    sink: UsageSink, store: MemoryUsageStore
) -> None:
    sink.record(make_usage("same"))
    sink.record(make_usage("same"))
    sink.flush()
    sink.record(make_usage("same"))
    sink.flush()

    assert (len(store.rows), sink.num_rows_written, sink.num_duplicates) == (1, 1, 2)
    assert [totals.num_requests for totals in store.minutes.values()] == [1]


def test_an_outage_keeps_the_rows_in_the_log_and_a_later_flush_writes_them_once_in_order(
    sink: UsageSink, store: MemoryUsageStore
) -> None:
    for request_id in ("a", "b"):
        sink.record(make_usage(request_id))
    store.fail_next()

    with pytest.raises(StoreUnavailable):
        sink.flush()
    assert (pending(sink), sink.num_failed_flushes, len(store.rows)) == (2, 1, 0)

    sink.record(make_usage("c"))
    assert sink.flush() == 3
    assert list(store.rows) == ["a", "b", "c"]
    assert sink.flush() == 0


def test_the_thread_retries_through_an_outage(sink: UsageSink, store: MemoryUsageStore) -> None:
    store.fail_next(2)
    sink.start()
    try:
        sink.record(make_usage())
        assert eventually(lambda: len(store.rows) == 1)
    finally:
        sink.close()
    assert (sink.num_failed_flushes, sink.num_rows_written) == (2, 1)


def test_close_copies_what_the_log_holds_and_removes_the_log(
    sink: UsageSink, store: MemoryUsageStore
) -> None:
    sink.start()
    for _ in range(3):
        sink.record(make_usage())

    assert sink.close(timeout_s=2) == 0
    assert len(store.rows) == 3
    assert not sink.log.folder.exists()


def test_record_after_close_is_refused(sink: UsageSink) -> None:
    sink.close()

    with pytest.raises(RuntimeError, match="closed"):
        sink.record(make_usage())


def test_rows_left_by_a_close_during_an_outage_are_copied_once_by_the_next_sink(
    store: MemoryUsageStore, tmp_path: Path
) -> None:
    first = make_sink(store, tmp_path)
    for request_id in ("a", "b"):
        first.record(make_usage(request_id))
    store.go_down()
    assert first.close(timeout_s=0.05) > 0

    store.come_back()
    second = make_sink(store, tmp_path)
    second.flush()
    third = make_sink(store, tmp_path)
    third.flush()

    assert sorted(store.rows) == ["a", "b"]
    assert (second.num_replayed, third.num_replayed) == (2, 0)
    assert not first.log.folder.exists()


KILLED_WRITER = """
import os, signal, sys
sys.path.insert(0, {root!r})
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from tests.usage.factories import make_usage
from usage.sink import MemoryUsageStore, UsageSink
sink = UsageSink(MemoryUsageStore(), log_dir={log_dir!r})
for i in range(50):
    sink.record(make_usage(f"killed-{{i}}"))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_rows_of_a_process_killed_with_sigkill_are_copied_by_the_next_sink(
    store: MemoryUsageStore, tmp_path: Path
) -> None:
    script = KILLED_WRITER.format(
        root=str(Path(__file__).resolve().parents[2]), log_dir=str(tmp_path / "usage-log")
    )
    killed = subprocess.run([sys.executable, "-c", script], timeout=120, check=False)
    assert killed.returncode == -9

    survivor = make_sink(store, tmp_path)
    survivor.flush()

    assert sorted(store.rows) == sorted(f"killed-{i}" for i in range(50))
    assert survivor.num_replayed == 50


def test_a_line_cut_short_by_a_crash_is_dropped_and_the_whole_lines_are_kept(
    store: MemoryUsageStore, tmp_path: Path
) -> None:
    first = make_sink(store, tmp_path)
    first.record(make_usage("whole"))
    segment = next(first.log.folder.glob("*.jsonl"))
    first.log.close()  # the process "dies" here, mid-append:
    with segment.open("ab") as torn:
        torn.write(b'{"request_id": "torn", "ten')

    make_sink(store, tmp_path).flush()

    assert list(store.rows) == ["whole"]
    assert store.quarantined == {}


# --- poison ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("app", "bad\x00app"),
        ("app", "lone \udc80 surrogate"),
        ("model", "tab\tin model"),
        ("latency_s", float("nan")),
        ("prompt_tokens", 2**64),
    ],
)
def test_a_row_no_store_can_take_is_quarantined_and_the_rows_behind_it_are_written(
    sink: UsageSink, store: MemoryUsageStore, field: str, value: object
) -> None:
    sink.record(make_usage("before"))
    sink.record(make_usage("poison", **{field: value}))
    sink.record(make_usage("after"))

    sink.flush()

    assert sorted(store.rows) == ["after", "before"]
    assert [q.request_id for q in store.quarantined.values()] == ["poison"]
    assert field in next(iter(store.quarantined.values())).error
    assert pending(sink) == 0


def test_a_row_the_store_refuses_while_up_is_quarantined_and_the_others_are_written(
    sink: UsageSink, store: MemoryUsageStore
) -> None:
    store.refused_apps.add("refused")
    for request_id in ("a", "b"):
        sink.record(make_usage(request_id))
    sink.record(make_usage("c", app="refused"))
    sink.record(make_usage("d"))

    sink.flush()

    assert sorted(store.rows) == ["a", "b", "d"]
    assert [q.request_id for q in store.quarantined.values()] == ["c"]
    assert "RowRefused" in next(iter(store.quarantined.values())).error
    assert sink.num_quarantined == 1


def test_a_line_that_is_not_a_row_is_quarantined(store: MemoryUsageStore, tmp_path: Path) -> None:
    first = make_sink(store, tmp_path)
    first.record(make_usage("good"))
    segment = next(first.log.folder.glob("*.jsonl"))
    first.log.close()
    with segment.open("ab") as log:
        log.write(b'{"request_id": "half", "not": "a row"}\n{not json\n')

    make_sink(store, tmp_path).flush()

    assert list(store.rows) == ["good"]
    assert sorted(q.request_id for q in store.quarantined.values()) == ["", "half"]


def test_a_poisoned_log_of_a_dead_worker_keeps_billing_every_other_row_across_a_restart(
    store: MemoryUsageStore, tmp_path: Path
) -> None:
    dead = make_sink(store, tmp_path)
    dead.record(make_usage("old", app="bad\x00app"))
    dead.record(make_usage("old-good"))
    dead.log.close()

    restarted = make_sink(store, tmp_path)
    restarted.record(make_usage("new"))
    restarted.flush()
    restarted.flush()

    assert sorted(store.rows) == ["new", "old-good"]
    assert [q.request_id for q in store.quarantined.values()] == ["old"]


def test_quarantining_the_same_line_twice_keeps_it_once(
    sink: UsageSink, store: MemoryUsageStore
) -> None:
    sink.record(make_usage("poison", app="bad\x00app"))
    entries = sink.log.read(10)
    sink.flush()
    rows, poison = sink._parse(entries, "replayed")

    assert (rows, store.quarantine(poison)) == ([], 0)
    assert len(store.quarantined) == 1


# --- backlog --------------------------------------------------------------------------------


def test_a_long_outage_makes_the_sink_backlogged_until_the_store_catches_up(
    store: MemoryUsageStore, tmp_path: Path
) -> None:
    sink = make_sink(store, tmp_path, max_backlog_bytes=2000)
    store.go_down()
    for _ in range(20):
        sink.record(make_usage())
    with pytest.raises(StoreUnavailable):
        sink.flush()

    assert sink.backlogged

    store.come_back()
    sink.flush()
    assert (sink.backlogged, len(store.rows)) == (False, 20)


def test_records_from_many_threads_all_land(sink: UsageSink, store: MemoryUsageStore) -> None:
    sink.start()

    def produce(thread: int) -> None:
        for i in range(300):
            sink.record(make_usage(f"t{thread}-{i}"))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.close()

    assert (len(store.rows), sink.num_recorded, sink.num_rows_written) == (2400, 2400, 2400)


# --- against the database -------------------------------------------------------------------


@pytest.fixture
def acme(db: None) -> Tenant:
    return make_tenant("acme")


def test_no_database_work_happens_in_record(
    acme: Tenant, tmp_path: Path, django_assert_num_queries: Any
) -> None:
    sink = make_sink(DatabaseUsageStore(), tmp_path)

    with django_assert_num_queries(0):
        for _ in range(100):
            sink.record(usage_of(acme))

    assert sink.flush() == 100
    assert UsageRecord.objects.count() == 100


@pytest.mark.django_db(transaction=True)
def test_records_from_many_threads_all_land_in_the_database(tmp_path: Path) -> None:
    acme = make_tenant("acme")
    sink = make_sink(DatabaseUsageStore(), tmp_path, max_batch=100)
    sink.start()

    def produce(thread: int) -> None:
        for i in range(150):
            sink.record(usage_of(acme, f"t{thread}-{i}"))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sink.close(timeout_s=10) == 0

    assert UsageRecord.objects.count() == 900
    assert sum(UsageMinute.objects.values_list("num_requests", flat=True)) == 900


def test_a_poisoned_row_goes_to_the_quarantine_table_and_the_others_are_billed(
    acme: Tenant, tmp_path: Path
) -> None:
    sink = make_sink(DatabaseUsageStore(), tmp_path)
    sink.record(usage_of(acme, "before"))
    sink.record(usage_of(acme, "poison", app="nul\x00app"))
    sink.record(usage_of(acme, "after"))

    sink.flush()

    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == ["after", "before"]
    quarantined = QuarantinedUsage.objects.get()
    assert (quarantined.request_id, "app" in quarantined.error) == ("poison", True)
    assert "\\u0000" in quarantined.payload


@pytest.mark.django_db(transaction=True)
def test_usage_of_a_deleted_tenant_is_quarantined_and_the_others_are_billed(
    acme: Tenant, tmp_path: Path
) -> None:
    gone = make_tenant("gone")
    orphan = usage_of(gone, "orphan")
    gone.delete()
    sink = make_sink(DatabaseUsageStore(), tmp_path)
    sink.record(orphan)
    sink.record(usage_of(acme, "kept"))

    sink.flush()

    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["kept"]
    quarantined = QuarantinedUsage.objects.get()
    assert quarantined.request_id == "orphan"
    assert "no longer exists" in quarantined.error


def test_a_row_postgresql_refuses_is_quarantined_even_when_the_check_misses_it(
    acme: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage_sink, "check_usage", lambda usage: None)
    sink = make_sink(DatabaseUsageStore(), tmp_path)
    sink.record(usage_of(acme, "good"))
    sink.record(usage_of(acme, "nul", app="nul\x00app"))

    sink.flush()

    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["good"]
    assert list(QuarantinedUsage.objects.values_list("request_id", flat=True)) == ["nul"]
