"""The rollup job: hour/day sums equal the usage rows', each row counted once, histograms merge."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from tenants.models import Tenant
from tests.tenants.usage_data import T0, request_at, roll_up, store
from usage import histograms
from usage.models import (
    RollupCursor,
    TenantUsageDay,
    TenantUsageHour,
    UsageDay,
    UsageHour,
    UsageMinute,
    UsageRecord,
)
from usage.rollups import rebuild, roll_up_new_usage

SUMMED = ("prompt_tokens", "cached_tokens", "output_tokens", "kv_gib_seconds", "preemptions")


def totals(model: type, **filters: object) -> dict[str, object]:
    sums = model.objects.filter(**filters).aggregate(  # type: ignore[attr-defined]
        n=Sum("num_requests"), **{name: Sum(name) for name in SUMMED}
    )
    return sums


def raw_totals() -> dict[str, object]:
    sums = UsageRecord.objects.aggregate(**{name: Sum(name) for name in SUMMED})
    return {"n": UsageRecord.objects.count(), **sums}


# -- histograms -------------------------------------------------------------------------------


def test_a_histogram_percentile_is_within_five_percent_of_the_exact_one() -> None:
    durations = [1.5**i for i in range(1, 40)] * 3
    hist = histograms.of(durations)
    ordered = sorted(durations)
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = ordered[max(0, -(-int(q * len(ordered) * 1000) // 1000) - 1)]
        reported = histograms.quantile(hist, q)
        assert reported is not None
        assert abs(reported - exact) <= 0.05 * exact + 0.1


def test_histograms_add_like_the_durations_they_count() -> None:
    first, second = [10.0, 20.0, 400.0], [15.0, 9000.0]
    assert histograms.merged([histograms.of(first), histograms.of(second)]) == histograms.of(
        first + second
    )


def test_an_empty_histogram_has_no_percentile_and_a_bad_quantile_is_refused() -> None:
    assert histograms.quantile({}, 0.5) is None
    assert histograms.quantile(None, 0.5) is None
    with pytest.raises(ValueError, match="quantile"):
        histograms.quantile({"3": 1}, 0)


def test_missing_ttfts_are_left_out_of_a_histogram() -> None:
    assert sum(histograms.of([None, 5.0, None]).values()) == 1


# -- the rollup job --------------------------------------------------------------------------


def test_hour_and_day_rows_sum_to_the_usage_rows(acme: Tenant, globex: Tenant) -> None:
    store(
        *(request_at(acme, T0 + timedelta(minutes=7 * i)) for i in range(20)),
        *(request_at(globex, T0 + timedelta(hours=i), output_tokens=10 + i) for i in range(30)),
    )

    report = roll_up()

    assert report.rows == 50
    assert totals(UsageHour) == raw_totals()
    assert totals(UsageDay) == raw_totals()
    assert UsageHour.objects.filter(tenant=globex).count() == 30
    assert UsageDay.objects.filter(tenant=globex).count() == 2  # 10:00 + 30 h crosses midnight


def test_a_second_pass_rolls_up_nothing_again(acme: Tenant) -> None:
    store(*(request_at(acme, T0 + timedelta(seconds=i)) for i in range(5)))
    roll_up()

    again = roll_up()

    assert again.rows == 0
    assert totals(UsageHour)["n"] == 5


def test_rows_written_after_a_pass_are_rolled_up_by_the_next(acme: Tenant) -> None:
    store(request_at(acme, T0))
    roll_up()
    store(request_at(acme, T0 + timedelta(minutes=1)), request_at(acme, T0 - timedelta(days=3)))

    assert roll_up().rows == 2
    assert totals(UsageHour) == raw_totals()
    late = UsageDay.objects.get(day=(T0 - timedelta(days=3)).replace(hour=0))
    assert late.num_requests == 1  # a late row lands in the day it belongs to


def test_rows_younger_than_the_settle_time_wait_for_the_next_pass(acme: Tenant) -> None:
    store(request_at(acme, T0))

    report = roll_up_new_usage(timezone.now(), settle_s=3600)

    assert report.rows == 0
    assert not UsageHour.objects.exists()


def test_small_chunks_give_the_same_rollups_as_one_big_one(acme: Tenant, globex: Tenant) -> None:
    store(*(request_at(t, T0 + timedelta(minutes=i)) for i in range(13) for t in (acme, globex)))

    report = roll_up_new_usage(timezone.now(), settle_s=0, chunk_rows=4)

    assert report.rows == 26 and report.passes == 7
    assert totals(UsageHour) == raw_totals()
    cursor = RollupCursor.objects.get()
    assert cursor.record_id == UsageRecord.objects.order_by("created_at", "id").last().pk  # type: ignore[union-attr]


def test_histograms_at_every_level_count_every_request(acme: Tenant) -> None:
    store(
        *(request_at(acme, T0 + timedelta(seconds=i), ttft_s=0.01 * (i + 1)) for i in range(10)),
        request_at(acme, T0 + timedelta(seconds=30), ttft_s=None),
    )
    roll_up()
    store(request_at(acme, T0 + timedelta(seconds=40), ttft_s=2.0))
    roll_up()  # merges into the histograms the first pass wrote

    for model in (UsageMinute, UsageHour, UsageDay):
        row = model.objects.get()
        assert sum(row.latency_hist.values()) == 12
        assert sum(row.ttft_hist.values()) == 11  # the request with no TTFT is left out
        assert row.ttft_hist == histograms.of([10.0 * (i + 1) for i in range(10)] + [2000.0])


def test_decimal_kv_gib_seconds_stay_exact_through_the_rollups(acme: Tenant) -> None:
    store(*(request_at(acme, T0 + timedelta(seconds=i), kv_gib_seconds=0.1) for i in range(10)))

    roll_up()

    assert UsageDay.objects.get().kv_gib_seconds == Decimal("1.000000000")


def test_a_rebuild_rolls_everything_up_again_without_double_counting(acme: Tenant) -> None:
    store(*(request_at(acme, T0 + timedelta(hours=i)) for i in range(4)))
    roll_up()

    rebuild()
    assert not UsageHour.objects.exists()
    roll_up()

    assert totals(UsageHour) == raw_totals()
    assert sum(UsageMinute.objects.get(minute=T0).latency_hist.values()) == 1


def test_per_tenant_tables_hold_each_tenants_total(acme: Tenant, globex: Tenant) -> None:
    store(
        *(request_at(acme, T0 + timedelta(minutes=i), model=f"m{i % 3}") for i in range(9)),
        *(request_at(globex, T0 + timedelta(hours=i), app="agent") for i in range(3)),
    )

    roll_up()

    assert totals(TenantUsageHour) == totals(UsageHour) == raw_totals()
    assert totals(TenantUsageDay) == raw_totals()
    assert TenantUsageHour.objects.get(tenant=acme).num_requests == 9
    assert TenantUsageHour.objects.filter(tenant=globex).count() == 3


def test_stored_percentiles_are_the_merged_histograms(acme: Tenant) -> None:
    store(*(request_at(acme, T0 + timedelta(seconds=i), latency_s=i + 1.0) for i in range(10)))
    roll_up()
    store(request_at(acme, T0 + timedelta(seconds=20), latency_s=100.0))
    roll_up()

    for model in (UsageMinute, UsageHour, TenantUsageDay):
        row = model.objects.get()
        assert row.latency_p95_ms == histograms.quantile(row.latency_hist, 0.95)
        assert row.latency_p95_ms == pytest.approx(100_000, rel=0.05)
