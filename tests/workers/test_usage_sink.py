"""UsageSink: record() only buffers; flushes batch, retry, survive shutdown and never drop."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tenants.models import Tenant, UsageMinute, UsageRecord
from tests.tenants.factories import make_tenant
from tests.workers.usage_factories import eventually, make_usage, usage_of
from workers.usage_sink import (
    DatabaseUsageStore,
    MemoryUsageStore,
    StoreUnavailable,
    UsageSink,
    UsageStore,
)


def make_sink(store: UsageStore, tmp_path: Path, *, max_batch: int = 2000) -> UsageSink:
    return UsageSink(
        store, flush_interval_s=0.02, max_batch=max_batch, spill_dir=tmp_path / "spill"
    )


@pytest.fixture
def store() -> MemoryUsageStore:
    return MemoryUsageStore()


@pytest.fixture
def sink(store: MemoryUsageStore, tmp_path: Path) -> UsageSink:
    return make_sink(store, tmp_path)


def test_record_only_buffers(sink: UsageSink, store: MemoryUsageStore) -> None:
    for _ in range(3):
        sink.record(make_usage())

    assert (sink.buffered, sink.num_recorded, store.num_writes) == (3, 3, 0)


def test_flush_writes_everything_buffered_in_one_batch(
    sink: UsageSink, store: MemoryUsageStore
) -> None:
    for _ in range(5):
        sink.record(make_usage())

    assert sink.flush() == 5
    assert (len(store.rows), store.num_writes, sink.buffered) == (5, 1, 0)
    assert (sink.num_flushes, sink.num_rows_written) == (1, 5)


def test_flush_splits_a_large_buffer_into_batches_of_max_batch(
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


def test_a_failed_flush_keeps_the_rows_and_a_later_flush_writes_them_once(
    sink: UsageSink, store: MemoryUsageStore
) -> None:
    for request_id in ("a", "b"):
        sink.record(make_usage(request_id))
    store.fail_next()

    with pytest.raises(StoreUnavailable):
        sink.flush()
    assert (sink.buffered, sink.num_failed_flushes, len(store.rows)) == (2, 1, 0)

    sink.record(make_usage("c"))
    assert sink.flush() == 3
    assert list(store.rows) == ["a", "b", "c"]  # the retried rows kept their place
    assert sink.flush() == 0


def test_the_timer_flushes_without_an_explicit_flush(
    sink: UsageSink, store: MemoryUsageStore
) -> None:
    sink.start()
    try:
        sink.record(make_usage())
        assert eventually(lambda: len(store.rows) == 1)
    finally:
        sink.close()


def test_the_thread_retries_a_failed_flush_until_it_succeeds(
    sink: UsageSink, store: MemoryUsageStore
) -> None:
    store.fail_next(2)
    sink.start()
    try:
        sink.record(make_usage())
        assert eventually(lambda: len(store.rows) == 1)
    finally:
        sink.close()
    assert (sink.num_failed_flushes, sink.num_rows_written) == (2, 1)


def test_close_flushes_what_is_buffered(sink: UsageSink, store: MemoryUsageStore) -> None:
    sink.start()
    for _ in range(3):
        sink.record(make_usage())

    assert sink.close(timeout_s=2) == 0
    assert (len(store.rows), sink.buffered) == (3, 0)


def test_record_after_close_is_refused(sink: UsageSink) -> None:
    sink.close()

    with pytest.raises(RuntimeError, match="closed"):
        sink.record(make_usage())


def test_close_with_an_unwritable_store_spills_and_a_new_sinks_start_replays_it_once(
    store: MemoryUsageStore, tmp_path: Path
) -> None:
    first = make_sink(store, tmp_path)
    for request_id in ("a", "b"):
        first.record(make_usage(request_id))
    store.go_down()

    assert first.close(timeout_s=0.1) == 2
    assert len(first.spill.pending()) == 1 and first.num_spilled == 2

    store.come_back()
    second = make_sink(store, tmp_path)
    second.start()
    second.close()
    third = make_sink(store, tmp_path)
    third.start()
    third.close()

    assert sorted(store.rows) == ["a", "b"]
    assert (second.num_replayed, third.num_replayed) == (2, 0)
    assert second.spill.pending() == []


def test_spilled_rows_the_store_still_refuses_at_start_are_replayed_by_the_thread(
    store: MemoryUsageStore, tmp_path: Path
) -> None:
    first = make_sink(store, tmp_path)
    first.record(make_usage("a"))
    store.go_down()
    first.close(timeout_s=0.05)

    second = make_sink(store, tmp_path)
    second.start()  # the store is still down: start() goes on, the file stays
    assert second.spill.pending() != []
    store.come_back()
    try:
        assert eventually(lambda: "a" in store.rows)
    finally:
        second.close()
    assert second.spill.pending() == []


def test_an_unreadable_spill_file_is_set_aside(store: MemoryUsageStore, tmp_path: Path) -> None:
    sink = make_sink(store, tmp_path)
    sink.spill.folder.mkdir(parents=True)
    (sink.spill.folder / "usage-1.jsonl").write_text("{not json\n")

    assert sink.replay_spilled() == 0
    assert sink.spill.pending() == []
    assert (sink.spill.folder / "usage-1.corrupt").exists()


def test_records_from_many_threads_all_land(sink: UsageSink, store: MemoryUsageStore) -> None:
    sink.start()

    def produce(thread: int) -> None:
        for i in range(500):
            sink.record(make_usage(f"t{thread}-{i}"))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.close()

    assert (len(store.rows), sink.num_recorded, sink.num_rows_written) == (4000, 4000, 4000)


@pytest.mark.parametrize("field", ["kv_gib_seconds", "latency_s", "finished_at"])
def test_record_refuses_a_time_that_is_not_a_number(sink: UsageSink, field: str) -> None:
    with pytest.raises(ValueError, match="finite"):
        sink.record(make_usage(None, **{field: float("nan")}))
    assert sink.buffered == 0


def test_record_refuses_a_request_id_the_column_cannot_hold(sink: UsageSink) -> None:
    with pytest.raises(ValueError, match="request id"):
        sink.record(make_usage("x" * 101))


# --- against the database -------------------------------------------------------------------


@pytest.fixture
def acme(db: None) -> Tenant:
    return make_tenant("acme")


def test_no_database_work_happens_in_record(
    acme: Tenant, tmp_path: Path, django_assert_num_queries: object
) -> None:
    sink = make_sink(DatabaseUsageStore(), tmp_path)

    with django_assert_num_queries(0):  # type: ignore[operator]
        for _ in range(100):
            sink.record(usage_of(acme))

    assert sink.buffered == 100
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
    assert sink.num_rows_written == 900
