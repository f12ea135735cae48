"""Invoices: a tenant's usage over a period, priced at its plan, in exact Decimal arithmetic.

A line is `quantity x unit price`, rounded once, to the currency's minor unit (half up);
an invoice's total is the exact sum of its lines. Quantities are read from the day
rollups, so a period is whole UTC days. Generating an invoice is idempotent: a draft is
recomputed in place (same row, same number), a finalised invoice is returned as it is and
never changes again.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext

from django.db import transaction
from django.db.models import Q, Sum

from billing.models import Invoice, InvoiceLine, InvoiceStatus, Meter
from tenants.decimals import minor_unit
from tenants.models import Plan, Tenant
from usage.models import UsageDay
from usage.rollups import roll_up_new_usage

TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)
SECONDS_PER_HOUR = Decimal(3600)
QUANTITY_PLACES = Decimal("1e-12")


class BillingError(ValueError):
    """A billing request that cannot be honoured; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Period:
    """[start, end) in UTC, whole days."""

    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        last = (self.end - timedelta(days=1)).date()
        if self.start.day == 1 and self.end == _next_month(self.start):
            return f"{self.start:%Y-%m}"
        return f"{self.start.date().isoformat()}..{last.isoformat()}"

    def is_closed(self, now: datetime) -> bool:
        return self.end <= now


def _utc_day(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _next_month(start: datetime) -> datetime:
    days = calendar.monthrange(start.year, start.month)[1]
    return start + timedelta(days=days)


def month(year: int, month_number: int) -> Period:
    start = datetime(year, month_number, 1, tzinfo=UTC)
    return Period(start, _next_month(start))


def parse_period(text: str) -> Period:
    """`2026-11` (a calendar month) or `2026-11-01..2026-11-15` (days, both included)."""
    text = text.strip()
    if match := re.fullmatch(r"(\d{4})-(\d{2})", text):
        year, number = int(match[1]), int(match[2])
        if not 1 <= number <= 12:
            raise BillingError(f"{text!r}: the month must be 01 to 12.")
        return month(year, number)
    if match := re.fullmatch(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})", text):
        try:
            first, last = date.fromisoformat(match[1]), date.fromisoformat(match[2])
        except ValueError as error:
            raise BillingError(f"{text!r}: {error}.") from None
        if last < first:
            raise BillingError(f"{text!r}: the last day is before the first.")
        return Period(_utc_day(first), _utc_day(last) + timedelta(days=1))
    raise BillingError(
        f"{text!r} is not a period: use YYYY-MM (a month) or YYYY-MM-DD..YYYY-MM-DD (days)."
    )


def previous_month(now: datetime) -> Period:
    first_of_this = datetime(now.year, now.month, 1, tzinfo=UTC)
    last_month = first_of_this - timedelta(days=1)
    return month(last_month.year, last_month.month)


# -- pricing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    """A tenant's billable usage in a period, in natural units."""

    input_tokens: int  # prompt tokens the engine computed (not served from the prefix cache)
    cached_input_tokens: int
    output_tokens: int
    kv_gib_seconds: Decimal


@dataclass(frozen=True, slots=True)
class LineDraft:
    meter: Meter
    description: str
    quantity: Decimal  # in the price's unit (1M tokens, GiB-hours), to 12 places, for display
    unit: str
    unit_price: Decimal
    amount: Decimal  # rounded once, from the exact quantity
    consumed: Decimal  # in the meter's natural unit (tokens, GiB-seconds), exact
    adjusts: Invoice | None = None  # the final invoice whose late usage this line bills


def usage_in(tenant: Tenant, period: Period) -> Usage:
    sums = UsageDay.objects.filter(
        tenant=tenant, day__gte=period.start, day__lt=period.end
    ).aggregate(
        prompt=Sum("prompt_tokens"),
        cached=Sum("cached_tokens"),
        output=Sum("output_tokens"),
        kv=Sum("kv_gib_seconds"),
    )
    prompt, cached = sums["prompt"] or 0, sums["cached"] or 0
    return Usage(
        input_tokens=prompt - cached,
        cached_input_tokens=cached,
        output_tokens=sums["output"] or 0,
        kv_gib_seconds=sums["kv"] or Decimal(0),
    )


# Per meter: the price unit in natural units, and its name.
UNITS = {
    Meter.INPUT_TOKENS: (TOKENS_PER_PRICE_UNIT, "1M tokens"),
    Meter.CACHED_INPUT_TOKENS: (TOKENS_PER_PRICE_UNIT, "1M tokens"),
    Meter.OUTPUT_TOKENS: (TOKENS_PER_PRICE_UNIT, "1M tokens"),
    Meter.KV_GIB_HOURS: (SECONDS_PER_HOUR, "GiB-hour"),
}


def consumed_per_meter(usage: Usage) -> dict[Meter, Decimal]:
    return {
        Meter.INPUT_TOKENS: Decimal(usage.input_tokens),
        Meter.CACHED_INPUT_TOKENS: Decimal(usage.cached_input_tokens),
        Meter.OUTPUT_TOKENS: Decimal(usage.output_tokens),
        Meter.KV_GIB_HOURS: usage.kv_gib_seconds,
    }


def plan_price(plan: Plan, meter: Meter) -> Decimal:
    return {
        Meter.INPUT_TOKENS: plan.price_input_per_mtok,
        Meter.CACHED_INPUT_TOKENS: plan.price_cached_input_per_mtok,
        Meter.OUTPUT_TOKENS: plan.price_output_per_mtok,
        Meter.KV_GIB_HOURS: plan.price_kv_gib_hour,
    }[meter]


def price(usage: Usage, plan: Plan) -> list[LineDraft]:
    """One line per meter with usage; amounts rounded once, at the line."""
    cent = minor_unit(plan.currency)
    return [
        _line(meter, consumed, plan_price(plan, meter), cent)
        for meter, consumed in consumed_per_meter(usage).items()
        if consumed
    ]


def _line(
    meter: Meter,
    consumed: Decimal,
    unit_price: Decimal,
    cent: Decimal,
    *,
    adjusts: Invoice | None = None,
) -> LineDraft:
    per_unit, unit = UNITS[meter]
    with localcontext() as context:
        context.prec = 60  # far beyond any quantity x price: the only rounding is the last one
        amount = (consumed * unit_price / per_unit).quantize(cent, rounding=ROUND_HALF_UP)
        quantity = (consumed / per_unit).quantize(QUANTITY_PLACES, rounding=ROUND_HALF_UP)
    described = f"{consumed:,} {CONSUMED[meter]}"
    if adjusts is not None:
        described = f"Late usage of {adjusts.number}: {described}"
    return LineDraft(meter, described, quantity, unit, unit_price, amount, consumed, adjusts)


# -- late usage --------------------------------------------------------------------------------


def adjustments(tenant: Tenant, invoice: Invoice, plan: Plan) -> list[LineDraft]:
    """Usage that arrived for a period whose invoice was already final (a worker's log
    replayed after an outage), billed on the next open invoice: one line per meter and
    final invoice, at that invoice's price. What earlier adjustments billed is not billed
    again; a remainder worth less than a minor unit waits until it adds up to one."""
    cent = minor_unit(plan.currency)
    finals = Invoice.objects.filter(
        tenant=tenant, status=InvoiceStatus.FINALIZED, period_end__lte=invoice.period_start
    ).order_by("period_start")
    lines: list[LineDraft] = []
    for final in finals:
        if _claimed_by_an_earlier_draft(tenant, final, invoice):
            continue
        billed = _billed(final, excluding=invoice)
        prices = dict(final.lines.filter(adjusts=None).values_list("meter", "unit_price"))
        usage = consumed_per_meter(usage_in(tenant, Period(final.period_start, final.period_end)))
        for meter, consumed in usage.items():
            late = consumed - billed.get(meter, Decimal(0))
            if late <= 0:
                continue
            line = _line(
                meter, late, prices.get(meter, plan_price(plan, meter)), cent, adjusts=final
            )
            if line.amount:
                lines.append(line)
    return lines


def _claimed_by_an_earlier_draft(tenant: Tenant, final: Invoice, invoice: Invoice) -> bool:
    """The next open invoice after `final` takes its late usage; a later one leaves it."""
    return (
        Invoice.objects.filter(
            tenant=tenant,
            period_start__gte=final.period_end,
            period_start__lt=invoice.period_start,
        )
        .exclude(status=InvoiceStatus.FINALIZED)
        .exists()
    )


def _billed(final: Invoice, *, excluding: Invoice) -> dict[Meter, Decimal]:
    """What has been billed for `final`'s period: its own lines and every adjustment of it
    on another invoice than `excluding` (which is being recomputed)."""
    rows = InvoiceLine.objects.filter(Q(invoice=final, adjusts=None) | Q(adjusts=final)).exclude(
        invoice=excluding
    )
    totals = rows.values("meter").annotate(total=Sum("consumed"))
    return {Meter(row["meter"]): row["total"] or Decimal(0) for row in totals}


# What an invoice line says was consumed, in the meter's natural unit.
CONSUMED = {
    Meter.INPUT_TOKENS: "input tokens computed (not served from the prefix cache)",
    Meter.CACHED_INPUT_TOKENS: "input tokens served from the prefix cache",
    Meter.OUTPUT_TOKENS: "output tokens",
    Meter.KV_GIB_HOURS: "GiB-seconds of KV cache held",
}


# -- invoices ---------------------------------------------------------------------------------


def invoice_number(tenant: Tenant, period: Period) -> str:
    last = (period.end - timedelta(days=1)).date()
    return f"INV-{tenant.pk:06d}-{period.start:%Y%m%d}-{last:%Y%m%d}"


@transaction.atomic
def generate(tenant: Tenant, period: Period) -> Invoice:
    """The tenant's invoice for `period`: created, or its draft recomputed; a finalised one
    is returned untouched."""
    if tenant.plan is None:
        raise BillingError(f"Tenant {tenant.slug!r} has no plan: give it one before billing.")
    invoice, _ = Invoice.objects.select_for_update().get_or_create(
        tenant=tenant,
        period_start=period.start,
        period_end=period.end,
        defaults={"number": invoice_number(tenant, period), "total": Decimal(0)},
    )
    if invoice.is_finalized:
        return invoice
    plan = tenant.plan
    drafts = price(usage_in(tenant, period), plan) + adjustments(tenant, invoice, plan)
    invoice.lines.all().delete()
    InvoiceLine.objects.bulk_create(
        InvoiceLine(
            invoice=invoice,
            meter=draft.meter,
            description=draft.description,
            quantity=draft.quantity,
            unit=draft.unit,
            unit_price=draft.unit_price,
            amount=draft.amount,
            consumed=draft.consumed,
            adjusts=draft.adjusts,
        )
        for draft in drafts
    )
    invoice.plan_name = plan.name
    invoice.currency = plan.currency
    invoice.total = sum((draft.amount for draft in drafts), Decimal(0))
    invoice.save()
    return invoice


@transaction.atomic
def finalize(invoice: Invoice, now: datetime) -> Invoice:
    locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if locked.is_finalized:
        return locked
    if locked.period_end > now:
        raise BillingError(
            f"{locked.number}: the period ends {locked.period_end.isoformat()}; "
            "an open period can only be a draft."
        )
    locked.status = InvoiceStatus.FINALIZED
    locked.finalized_at = now
    locked.save(update_fields=["status", "finalized_at", "updated_at"])
    return locked


def tenants_to_bill(period: Period) -> list[Tenant]:
    """Tenants with usage in the period (with or without a plan: the caller reports those)."""
    ids = (
        UsageDay.objects.filter(day__gte=period.start, day__lt=period.end)
        .values_list("tenant_id", flat=True)
        .distinct()
    )
    return list(Tenant.objects.filter(id__in=ids).select_related("plan").order_by("slug"))


@dataclass(frozen=True, slots=True)
class BillingRun:
    invoices: list[Invoice]
    skipped: list[str]  # why a tenant got no invoice


def close(period: Period, now: datetime, *, tenant_slugs: list[str] | None = None) -> BillingRun:
    """Finalise every invoice of a closed period (the usage is rolled up first)."""
    if not period.is_closed(now):
        raise BillingError(
            f"The period {period.label} is still open (it ends {period.end.isoformat()}); "
            "only a closed period can be finalised."
        )
    return _bill(period, now, tenant_slugs, final=True)


def draft(period: Period, now: datetime, *, tenant_slugs: list[str] | None = None) -> BillingRun:
    """Draft (or redraft) every invoice of a period, open or closed; finalise none."""
    return _bill(period, now, tenant_slugs, final=False)


def _bill(
    period: Period, now: datetime, tenant_slugs: list[str] | None, *, final: bool
) -> BillingRun:
    roll_up_new_usage(now)
    tenants = tenants_to_bill(period)
    if tenant_slugs is not None:
        known = Tenant.objects.filter(slug__in=tenant_slugs).values_list("slug", flat=True)
        unknown = set(tenant_slugs) - set(known)
        if unknown:
            raise BillingError(f"No tenant named {', '.join(sorted(unknown))}.")
        tenants = [t for t in tenants if t.slug in tenant_slugs]
    invoices, skipped = [], []
    for tenant in tenants:
        if tenant.plan is None:
            skipped.append(f"{tenant.slug}: no plan")
            continue
        invoice = generate(tenant, period)
        invoices.append(finalize(invoice, now) if final else invoice)
    return BillingRun(invoices, skipped)
