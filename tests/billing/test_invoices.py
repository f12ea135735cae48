"""Invoices: Decimal lines rounded once, exact totals, idempotent generation, frozen once final."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from billing import invoices as billing
from billing.models import Invoice, InvoiceStatus, Meter
from tenants.models import Tenant
from tests.tenants.factories import make_plan, make_tenant
from tests.tenants.usage_data import T0, request_at, roll_up, store
from usage.models import UsageRecord

OCTOBER = billing.month(2026, 10)
AFTER_OCTOBER = datetime(2026, 11, 3, tzinfo=UTC)


@pytest.fixture
def october_usage(acme: Tenant, globex: Tenant) -> None:
    """Odd quantities, so that rounding matters: 37 acme requests, 11 globex ones."""
    store(
        *(
            request_at(
                acme,
                T0 + timedelta(hours=7 * i),
                prompt_tokens=1234 + i,
                cached_tokens=17 * i,
                output_tokens=333 + 2 * i,
                kv_gib_seconds=0.123456789 * (i + 1),
            )
            for i in range(37)
        ),
        *(request_at(globex, T0 + timedelta(days=i), output_tokens=999) for i in range(11)),
        request_at(acme, datetime(2026, 11, 1, tzinfo=UTC)),  # November: not on the bill
    )
    roll_up()


def expected_amounts(tenant: Tenant, period: billing.Period) -> dict[str, Decimal]:
    """The bill computed the long way: from every usage row, at full precision, rounded once."""
    rows = UsageRecord.objects.filter(
        tenant=tenant, finished_at__gte=period.start, finished_at__lt=period.end
    )
    plan = tenant.plan
    assert plan is not None
    million, cent = Decimal(1_000_000), Decimal("0.01")
    exact = {
        Meter.INPUT_TOKENS: sum(Decimal(r.prompt_tokens - r.cached_tokens) for r in rows)
        * plan.price_input_per_mtok
        / million,
        Meter.CACHED_INPUT_TOKENS: sum(Decimal(r.cached_tokens) for r in rows)
        * plan.price_cached_input_per_mtok
        / million,
        Meter.OUTPUT_TOKENS: sum(Decimal(r.output_tokens) for r in rows)
        * plan.price_output_per_mtok
        / million,
        Meter.KV_GIB_HOURS: sum(r.kv_gib_seconds for r in rows)
        * plan.price_kv_gib_hour
        / Decimal(3600),
    }
    return {m: v.quantize(cent, rounding=ROUND_HALF_UP) for m, v in exact.items() if v}


def test_an_invoice_is_the_usage_times_the_plan_prices_to_the_cent(
    acme: Tenant, october_usage: None
) -> None:
    invoice = billing.generate(acme, OCTOBER)

    amounts = {line.meter: line.amount for line in invoice.lines.all()}
    assert amounts == expected_amounts(acme, OCTOBER)
    assert invoice.total == sum(amounts.values())
    assert all(isinstance(v, Decimal) for v in amounts.values())
    assert invoice.currency == "USD" and invoice.plan_name == "Standard"


def test_quantities_are_in_the_prices_units(acme: Tenant, october_usage: None) -> None:
    lines = {line.meter: line for line in billing.generate(acme, OCTOBER).lines.all()}

    output_tokens = sum(333 + 2 * i for i in range(37))
    assert lines[Meter.OUTPUT_TOKENS].quantity == Decimal(output_tokens) / Decimal(1_000_000)
    assert lines[Meter.OUTPUT_TOKENS].unit == "1M tokens"
    assert lines[Meter.KV_GIB_HOURS].unit == "GiB-hour"


def test_generating_twice_gives_the_same_invoice(acme: Tenant, october_usage: None) -> None:
    first = billing.generate(acme, OCTOBER)
    first_lines = list(first.lines.values_list("meter", "quantity", "amount"))

    second = billing.generate(acme, OCTOBER)

    assert second.pk == first.pk and second.number == first.number
    assert list(second.lines.values_list("meter", "quantity", "amount")) == first_lines
    assert Invoice.objects.count() == 1


def test_a_draft_follows_late_usage_but_a_final_invoice_never_changes(
    acme: Tenant, october_usage: None
) -> None:
    draft = billing.generate(acme, OCTOBER)
    store(request_at(acme, T0 + timedelta(days=2), output_tokens=1_000_000))
    roll_up()
    redrafted = billing.generate(acme, OCTOBER)
    assert redrafted.total > draft.total

    final = billing.finalize(redrafted, AFTER_OCTOBER)
    store(request_at(acme, T0 + timedelta(days=3), output_tokens=1_000_000))
    roll_up()
    again = billing.generate(acme, OCTOBER)

    assert again.status == InvoiceStatus.FINALIZED and again.total == final.total
    assert again.finalized_at == final.finalized_at


def test_a_plan_price_change_does_not_rewrite_a_final_invoice(
    acme: Tenant, october_usage: None
) -> None:
    final = billing.finalize(billing.generate(acme, OCTOBER), AFTER_OCTOBER)
    plan = acme.plan
    assert plan is not None
    plan.price_output_per_mtok = Decimal("99")
    plan.save()

    assert billing.generate(acme, OCTOBER).total == final.total


def test_an_open_period_can_be_drafted_but_not_finalised(acme: Tenant, october_usage: None) -> None:
    draft = billing.generate(acme, OCTOBER)

    with pytest.raises(billing.BillingError, match="open period"):
        billing.finalize(draft, datetime(2026, 10, 20, tzinfo=UTC))


def test_zero_decimal_currencies_round_to_whole_units(db: None) -> None:
    tenant = make_tenant(
        "yen", plan=make_plan(currency="JPY", price_output_per_mtok=Decimal("150"))
    )
    store(request_at(tenant, T0, output_tokens=12_345, kv_gib_seconds=0.0))
    roll_up()

    line = billing.generate(tenant, OCTOBER).lines.get(meter=Meter.OUTPUT_TOKENS)

    assert line.amount == Decimal(2)  # 0.012345 M x 150 = 1.85175 -> 2 yen


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2026-11", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        ("2026-02", datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
        (
            "2026-11-01..2026-11-15",
            datetime(2026, 11, 1, tzinfo=UTC),
            datetime(2026, 11, 16, tzinfo=UTC),
        ),
    ],
)
def test_periods_are_months_or_whole_days(text: str, start: datetime, end: datetime) -> None:
    period = billing.parse_period(text)
    assert (period.start, period.end) == (start, end)


@pytest.mark.parametrize(
    "text", ["2026-13", "november", "2026-11-15..2026-11-01", "2026-02-30..2026-03-01"]
)
def test_bad_periods_are_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(billing.BillingError):
        billing.parse_period(text)


# -- the command -------------------------------------------------------------------------------


def run(*args: str) -> str:
    out = StringIO()
    call_command("invoices", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_invoices_close_finalises_every_tenant_with_usage(
    acme: Tenant, globex: Tenant, october_usage: None
) -> None:
    output = run("close", "--period", "2026-10")

    finals = Invoice.objects.filter(status=InvoiceStatus.FINALIZED)
    assert {i.tenant.slug for i in finals} == {"acme", "globex"}
    assert "2 invoice(s) finalised for 2026-10" in output
    assert run("close", "--period", "2026-10").count("finalized") == 2  # idempotent
    assert Invoice.objects.count() == 2


def test_invoices_close_refuses_an_open_period_and_a_bad_one(db: None) -> None:
    with pytest.raises(CommandError, match="still open"):
        run("close", "--period", "2999-01")
    with pytest.raises(CommandError, match="YYYY-MM"):
        run("close", "--period", "last-month")


def test_a_tenant_without_a_plan_is_reported_not_billed(db: None) -> None:
    planless = make_tenant("planless")
    store(request_at(planless, T0))
    roll_up()
    err = StringIO()

    call_command("invoices", "close", "--period", "2026-10", stdout=StringIO(), stderr=err)

    assert "planless: no plan" in err.getvalue()
    assert not Invoice.objects.exists()


# -- the API ------------------------------------------------------------------------------------


def test_staff_list_every_invoice_and_tenants_only_theirs(
    staff: APIClient, alice: APIClient, acme: Tenant, globex: Tenant, october_usage: None
) -> None:
    mine = billing.generate(acme, OCTOBER)
    theirs = billing.generate(globex, OCTOBER)

    assert staff.get("/api/v1/invoices/").json()["count"] == 2
    listed = alice.get("/api/v1/invoices/").json()["results"]
    assert [i["number"] for i in listed] == [mine.number]
    assert alice.get(f"/api/v1/invoices/{theirs.pk}/").status_code == 404


def test_an_invoice_reads_back_with_its_lines_as_exact_strings(
    staff: APIClient, acme: Tenant, october_usage: None
) -> None:
    invoice = billing.generate(acme, OCTOBER)

    body: dict[str, Any] = staff.get(f"/api/v1/invoices/{invoice.pk}/").json()

    assert body["tenant"] == "acme" and body["status"] == "draft"
    assert Decimal(body["total"]) == invoice.total
    assert len(body["total"].split(".")[1]) == 2  # at the currency's minor unit
    assert sum(Decimal(line["amount"]) for line in body["lines"]) == Decimal(body["total"])


def test_invoices_filter_by_period_and_refuse_a_bad_one(
    staff: APIClient, acme: Tenant, october_usage: None
) -> None:
    billing.generate(acme, OCTOBER)

    assert staff.get("/api/v1/invoices/", {"period": "2026-10"}).json()["count"] == 1
    assert staff.get("/api/v1/invoices/", {"period": "2026-09"}).json()["count"] == 0
    bad = staff.get("/api/v1/invoices/", {"period": "Q4"})
    assert bad.status_code == 400 and "period" in bad.json()


def test_invoices_cannot_be_changed_through_the_api(
    staff: APIClient, acme: Tenant, october_usage: None
) -> None:
    invoice = billing.generate(acme, OCTOBER)

    assert staff.delete(f"/api/v1/invoices/{invoice.pk}/").status_code == 405
    assert staff.patch(f"/api/v1/invoices/{invoice.pk}/", {"total": "0"}).status_code == 405


def test_invoices_preview_drafts_an_open_period_and_finalises_nothing(
    acme: Tenant, october_usage: None
) -> None:
    store(request_at(acme, datetime(2999, 1, 5, tzinfo=UTC)))  # a period still open
    roll_up()

    output = run("preview", "--period", "2999-01")

    draft = Invoice.objects.get()
    assert draft.status == InvoiceStatus.DRAFT and draft.period_start.year == 2999
    assert "1 invoice(s) drafted for 2999-01" in output
    with pytest.raises(CommandError, match="No tenant named nobody"):
        run("preview", "--period", "2026-10", "--tenant", "nobody")


NOVEMBER = billing.month(2026, 11)
DECEMBER = billing.month(2026, 12)
AFTER_NOVEMBER = datetime(2026, 12, 2, tzinfo=UTC)


def late_october_request(acme: Tenant, output_tokens: int) -> None:
    """Usage of October that reaches the database after October's invoice was final (a
    worker's log replayed after an outage)."""
    store(request_at(acme, T0 + timedelta(days=4), output_tokens=output_tokens))
    roll_up()


def adjustment_lines(invoice: Invoice) -> list[tuple[str, str, Decimal]]:
    return [
        (line.meter, line.adjusts.number, line.consumed)
        for line in invoice.lines.exclude(adjusts=None)
    ]


def test_late_usage_of_a_final_period_goes_on_the_next_open_invoice_at_the_old_price(
    acme: Tenant, october_usage: None
) -> None:
    october = billing.finalize(billing.generate(acme, OCTOBER), AFTER_OCTOBER)
    plan = acme.plan
    assert plan is not None
    old_price = plan.price_output_per_mtok
    plan.price_output_per_mtok = old_price * 2  # a new price since: the old one applies
    plan.save()

    late_october_request(acme, output_tokens=500_000)
    november = billing.generate(acme, NOVEMBER)

    assert billing.generate(acme, OCTOBER).total == october.total  # final: untouched
    assert adjustment_lines(november) == [(Meter.OUTPUT_TOKENS, october.number, Decimal(500_000))]
    line = november.lines.get(adjusts=october)
    assert line.unit_price == old_price
    assert line.amount == (Decimal("0.5") * old_price).quantize(Decimal("0.01"))
    assert line.description.startswith(f"Late usage of {october.number}")
    assert november.total == sum(november.lines.values_list("amount", flat=True))


def test_late_usage_is_billed_once_across_later_invoices(acme: Tenant, october_usage: None) -> None:
    october = billing.finalize(billing.generate(acme, OCTOBER), AFTER_OCTOBER)
    late_october_request(acme, output_tokens=300_000)
    billing.finalize(billing.generate(acme, NOVEMBER), AFTER_NOVEMBER)

    late_october_request(acme, output_tokens=200_000)  # more of it, later still
    december = billing.generate(acme, DECEMBER)

    assert adjustment_lines(december) == [(Meter.OUTPUT_TOKENS, october.number, Decimal(200_000))]


def test_the_earliest_open_invoice_takes_the_late_usage_and_a_later_one_leaves_it(
    acme: Tenant, october_usage: None
) -> None:
    october = billing.finalize(billing.generate(acme, OCTOBER), AFTER_OCTOBER)
    november = billing.generate(acme, NOVEMBER)  # a draft, still open
    late_october_request(acme, output_tokens=100_000)

    december = billing.generate(acme, DECEMBER)
    november = billing.generate(acme, NOVEMBER)

    assert adjustment_lines(december) == []
    assert adjustment_lines(november) == [(Meter.OUTPUT_TOKENS, october.number, Decimal(100_000))]


def test_no_late_usage_means_no_adjustment_lines(acme: Tenant, october_usage: None) -> None:
    billing.finalize(billing.generate(acme, OCTOBER), AFTER_OCTOBER)

    assert adjustment_lines(billing.generate(acme, NOVEMBER)) == []
