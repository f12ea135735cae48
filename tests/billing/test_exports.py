"""Streamed exports: usage and invoices as CSV and JSON Lines, and a FOCUS cost CSV, parsed back."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from django.http import StreamingHttpResponse
from rest_framework.test import APIClient

from billing import invoices as billing
from billing.exports import FOCUS_COLUMNS, INVOICE_COLUMNS, USAGE_COLUMNS
from billing.models import Meter
from tenants.models import Tenant
from tests.tenants.usage_data import T0, request_at, roll_up, store, unix

OCTOBER = billing.month(2026, 10)


def body_of(response: Any) -> str:
    assert response.status_code == 200, getattr(response, "content", response)
    assert isinstance(response, StreamingHttpResponse)  # streamed, never built in memory
    return b"".join(response.streaming_content).decode()


def csv_rows(response: Any) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body_of(response))))


@pytest.fixture
def usage(acme: Tenant, globex: Tenant) -> None:
    store(
        *(request_at(acme, T0 + timedelta(days=i), kv_gib_seconds=0.5) for i in range(3)),
        *(request_at(globex, T0 + timedelta(hours=i), output_tokens=7) for i in range(5)),
    )
    roll_up()


RANGE = {"start_time": unix(OCTOBER.start), "end_time": unix(OCTOBER.end)}


def test_usage_csv_has_a_row_per_bucket_and_group(staff: APIClient, usage: None) -> None:
    response = staff.get("/api/v1/exports/usage.csv", {**RANGE, "group_by": "tenant"})

    rows = csv_rows(response)
    assert response["Content-Disposition"] == 'attachment; filename="usage.csv"'
    assert tuple(rows[0]) == USAGE_COLUMNS
    assert [(r["tenant"], int(r["num_requests"])) for r in rows] == [
        ("acme", 1),
        ("globex", 5),
        ("acme", 1),
        ("acme", 1),
    ]
    assert rows[0]["bucket_start"] == "2026-10-05T00:00:00Z"


def test_usage_export_walks_every_page_of_a_long_range(staff: APIClient, usage: None) -> None:
    rows = csv_rows(
        staff.get(
            "/api/v1/exports/usage.csv", {**RANGE, "bucket_width": "1m", "group_by": "tenant"}
        )
    )

    assert sum(int(r["num_requests"]) for r in rows) == 8  # 31 days of minutes: 31 pages


def test_usage_jsonl_parses_line_by_line_and_matches_the_csv(staff: APIClient, usage: None) -> None:
    params = {**RANGE, "group_by": "tenant,model", "bucket_width": "1h"}
    lines = body_of(staff.get("/api/v1/exports/usage.jsonl", params)).splitlines()
    records = [json.loads(line) for line in lines]
    rows = csv_rows(staff.get("/api/v1/exports/usage.csv", params))

    assert len(records) == len(rows) == 8  # acme: 3 hours on 3 days; globex: 5 hours
    assert [r["num_requests"] for r in records] == [int(r["num_requests"]) for r in rows]
    assert {r["model"] for r in records} == {"tiny-random"}


def test_a_tenant_key_exports_only_its_own_usage(alice: APIClient, usage: None) -> None:
    rows = csv_rows(alice.get("/api/v1/exports/usage.csv", {**RANGE, "group_by": "tenant"}))

    assert {r["tenant"] for r in rows} == {"acme"}
    assert alice.get("/api/v1/exports/usage.csv", {**RANGE, "tenants": "globex"}).status_code == 404


def test_a_bad_export_query_is_a_400_not_a_broken_download(staff: APIClient) -> None:
    response = staff.get("/api/v1/exports/usage.csv", {"start_time": "soon"})

    assert response.status_code == 400 and "start_time" in response.json()


def test_invoice_exports_list_every_line(staff: APIClient, acme: Tenant, usage: None) -> None:
    invoice = billing.generate(acme, OCTOBER)

    rows = csv_rows(staff.get("/api/v1/exports/invoices.csv"))
    lines = [
        json.loads(x) for x in body_of(staff.get("/api/v1/exports/invoices.jsonl")).splitlines()
    ]

    assert tuple(rows[0]) == INVOICE_COLUMNS
    assert {r["meter"] for r in rows} == {line.meter for line in invoice.lines.all()}
    assert sum(Decimal(r["amount"]) for r in rows) == invoice.total
    assert [x["amount"] for x in lines] == [r["amount"] for r in rows]


def test_focus_rows_sum_to_the_invoice_before_its_rounding(
    staff: APIClient, acme: Tenant, usage: None
) -> None:
    invoice = billing.finalize(billing.generate(acme, OCTOBER), OCTOBER.end)

    rows = csv_rows(staff.get("/api/v1/exports/focus.csv", {**RANGE, "tenants": "acme"}))

    assert tuple(rows[0]) == FOCUS_COLUMNS
    assert {r["SubAccountId"] for r in rows} == {"acme"}
    assert {r["InvoiceId"] for r in rows} == {invoice.number}
    assert {r["ChargePeriodStart"][:10] for r in rows} == {"2026-10-05", "2026-10-06", "2026-10-07"}
    for line in invoice.lines.all():
        billed = sum(Decimal(r["BilledCost"]) for r in rows if r["SkuId"] == f"parity-{line.meter}")
        assert billed.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) == line.amount
    kv = [r for r in rows if r["SkuId"] == f"parity-{Meter.KV_GIB_HOURS}"]
    assert sum(Decimal(r["ConsumedQuantity"]) for r in kv) == Decimal("1.5")
    assert {r["ConsumedUnit"] for r in kv} == {"GiB-seconds"}
    assert {r["PricingUnit"] for r in kv} == {"GiB-Hours"}


def test_focus_refuses_parameters_it_does_not_take(staff: APIClient) -> None:
    response = staff.get("/api/v1/exports/focus.csv", {**RANGE, "group_by": "tenant"})

    assert response.status_code == 400 and "group_by" in response.json()


@pytest.mark.parametrize("app", ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)"])
def test_a_cell_a_spreadsheet_would_evaluate_is_escaped_in_the_csv(
    staff: APIClient, acme: Tenant, app: str
) -> None:
    store(request_at(acme, T0, app=app))
    roll_up()

    rows = csv_rows(staff.get("/api/v1/exports/usage.csv", {**RANGE, "group_by": "app"}))

    assert [r["app"] for r in rows] == ["'" + app]
    assert int(rows[0]["num_requests"]) == 1  # numbers are left as numbers


@pytest.mark.parametrize(("width", "days"), [("1m", 31), ("1h", 400)])
def test_an_export_longer_than_its_width_allows_is_a_400_naming_the_cap(
    staff: APIClient, width: str, days: int
) -> None:
    start = unix(OCTOBER.start)
    query = {"start_time": start, "end_time": start + (days + 1) * 86_400, "bucket_width": width}

    response = staff.get("/api/v1/exports/usage.csv", query)

    assert response.status_code == 400
    assert f"at most {days:,} days" in response.json()["end_time"][0]


def test_a_long_sparse_export_skips_its_empty_stretches_in_a_query_each(
    staff: APIClient, acme: Tenant, django_assert_max_num_queries: Any
) -> None:
    # Two requests 390 days apart, exported by the hour: 9,360 hourly buckets, 56 pages
    # of 168 if walked one by one; two of them hold rows. Three steps (two pages and the
    # search that finds nothing more), each a search, maybe a page query, and the statement
    # timeout's five (savepoint, read, set, reset, release): 21, and the request's own
    # authentication. Walking every page would take over 56.
    store(request_at(acme, T0), request_at(acme, T0 + timedelta(days=390)))
    roll_up()
    query = {
        "start_time": unix(T0),
        "end_time": unix(T0 + timedelta(days=399)),
        "bucket_width": "1h",
    }

    with django_assert_max_num_queries(25):
        rows = csv_rows(staff.get("/api/v1/exports/usage.csv", {**query, "group_by": "tenant"}))

    assert sum(int(r["num_requests"]) for r in rows) == 2


def test_a_query_under_the_export_timeout_is_cancelled_past_it_and_the_setting_is_restored(
    db: None,
) -> None:
    from django.db import OperationalError, connection, transaction

    from billing.exports import statement_timeout

    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        (before,) = cursor.fetchone()
        with statement_timeout(5):
            cursor.execute("SELECT pg_sleep(0.01)")  # well within: runs
        with (
            pytest.raises(OperationalError, match="statement timeout"),
            transaction.atomic(),
            statement_timeout(0.05),
        ):
            cursor.execute("SELECT pg_sleep(2)")
        cursor.execute("SHOW statement_timeout")
        (after,) = cursor.fetchone()

    assert after == before
