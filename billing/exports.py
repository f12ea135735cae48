"""Billing exports, produced row by row so a year of usage streams in constant memory.

- usage: the usage report's results, one row per (bucket, group), CSV or JSON Lines;
- invoices: one row per invoice line, CSV or JSON Lines;
- FOCUS: a FinOps FOCUS 1.2-style cost CSV, one row per (tenant, UTC day, model, meter).

FOCUS costs are exact (unrounded) Decimals: summed over an invoice's period they give the
invoice line before its one rounding. Prices come from the invoice that covers the day
when there is one (what was billed), else from the tenant's plan as it is now.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum

from billing.invoices import SECONDS_PER_HOUR, TOKENS_PER_PRICE_UNIT
from billing.models import Invoice, InvoiceLine, Meter
from tenants.decimals import plain as _plain
from tenants.models import Plan, Tenant
from usage import report as usage_report
from usage.models import UsageDay

USAGE_COLUMNS = (
    "bucket_start",
    "bucket_end",
    "start_time",
    "end_time",
    "tenant",
    "api_key_id",
    "model",
    "app",
    "num_requests",
    "num_aborted",
    "num_errors",
    "input_tokens",
    "input_cached_tokens",
    "output_tokens",
    "kv_block_seconds",
    "kv_gib_seconds",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "latency_p95_ms",
    "preemptions",
)
INVOICE_COLUMNS = (
    "invoice_number",
    "invoice_id",
    "tenant",
    "period_start",
    "period_end",
    "status",
    "plan",
    "currency",
    "invoice_total",
    "meter",
    "description",
    "quantity",
    "unit",
    "unit_price",
    "amount",
)
FOCUS_COLUMNS = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceId",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingCurrency",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "SkuId",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
)
PROVIDER = "Parity"
SERVICE = "Parity LLM Inference"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Line:
    """A write-only file that hands back what was written: csv.writer into a generator."""

    def write(self, text: str) -> str:
        return text


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection):
# a tenant names its app "=HYPERLINK(...)" and the operator's finance sheet calls out.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    """A CSV cell: None as empty; text that a spreadsheet would evaluate, quoted with a
    leading apostrophe (OWASP's advice). Numbers stay numbers."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def as_csv(columns: Iterable[str], rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    writer = csv.writer(_Line(), lineterminator="\n")
    names = list(columns)
    yield writer.writerow(names)
    for row in rows:
        yield writer.writerow([cell(row.get(n)) for n in names])


def as_jsonl(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, default=str, separators=(",", ":")) + "\n"


# -- usage ------------------------------------------------------------------------------------


@contextmanager
def statement_timeout(seconds: float) -> Iterator[None]:
    """Every query inside runs for at most `seconds` (PostgreSQL; elsewhere a no-op): one
    export must not hold a connection and a core for minutes. The previous setting is put
    back, so a caller's own transaction (a test's) keeps its own."""
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('statement_timeout')")
        (previous,) = cursor.fetchone()
        cursor.execute(
            "SELECT set_config('statement_timeout', %s, true)", [f"{seconds * 1000:.0f}"]
        )
        yield
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])


def usage_rows(query: usage_report.UsageQuery) -> Iterator[dict[str, Any]]:
    """Every non-empty result of the whole range, page after page (each page one query,
    under the export statement timeout; the rows are sent outside it, so a slow reader
    holds no transaction open)."""
    pages = query.whole_range()
    while True:
        with statement_timeout(settings.PARITY_EXPORT_STATEMENT_TIMEOUT_S):
            page = next(pages, None)
            buckets = [] if page is None else usage_report.bucketed(page)
        if page is None:
            return
        for bucket in buckets:
            start, end = bucket["start_time"], bucket["end_time"]
            for result in bucket["results"]:
                row = {k: v for k, v in result.items() if k != "object"}
                yield {
                    "bucket_start": iso(datetime.fromtimestamp(start, UTC)),
                    "bucket_end": iso(datetime.fromtimestamp(end, UTC)),
                    "start_time": start,
                    "end_time": end,
                    **row,
                }


# -- invoices ---------------------------------------------------------------------------------


def invoice_rows(invoices: Iterable[Invoice]) -> Iterator[dict[str, Any]]:
    for invoice in invoices:
        for line in invoice.lines.all():
            yield {
                "invoice_number": invoice.number,
                "invoice_id": invoice.pk,
                "tenant": invoice.tenant.slug,
                "period_start": iso(invoice.period_start),
                "period_end": iso(invoice.period_end),
                "status": invoice.status,
                "plan": invoice.plan_name,
                "currency": invoice.currency,
                "invoice_total": str(invoice.total),
                "meter": line.meter,
                "description": line.description,
                "quantity": str(line.quantity),
                "unit": line.unit,
                "unit_price": str(line.unit_price),
                "amount": str(line.amount),
            }


# -- FOCUS ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Price:
    unit_price: Decimal
    currency: str
    invoice: Invoice | None


@dataclass(frozen=True, slots=True)
class MeterSpec:
    meter: Meter
    consumed_unit: str
    pricing_unit: str
    per_pricing_unit: Decimal
    plan_field: str


_PER_M, _PER_HOUR = TOKENS_PER_PRICE_UNIT, SECONDS_PER_HOUR
METERS = (
    MeterSpec(Meter.INPUT_TOKENS, "Tokens", "1M Tokens", _PER_M, "price_input_per_mtok"),
    MeterSpec(
        Meter.CACHED_INPUT_TOKENS, "Tokens", "1M Tokens", _PER_M, "price_cached_input_per_mtok"
    ),
    MeterSpec(Meter.OUTPUT_TOKENS, "Tokens", "1M Tokens", _PER_M, "price_output_per_mtok"),
    MeterSpec(
        Meter.KV_GIB_HOURS, "GiB-seconds", "GiB-Hours", SECONDS_PER_HOUR, "price_kv_gib_hour"
    ),
)


def _consumed(spec: MeterSpec, row: dict[str, Any]) -> Decimal:
    if spec.meter == Meter.INPUT_TOKENS:
        return Decimal(row["prompt"] - row["cached"])
    if spec.meter == Meter.CACHED_INPUT_TOKENS:
        return Decimal(row["cached"])
    if spec.meter == Meter.OUTPUT_TOKENS:
        return Decimal(row["output"])
    return row["kv"] or Decimal(0)


class _Prices:
    """Unit prices per (tenant, day, meter): the covering invoice's, else the plan's."""

    def __init__(self, tenants: dict[int, Tenant], start: datetime, end: datetime) -> None:
        self.tenants = tenants
        self.invoices: dict[int, list[Invoice]] = {}
        covering = Invoice.objects.filter(
            tenant_id__in=tenants, period_start__lt=end, period_end__gt=start
        ).prefetch_related("lines")
        for invoice in covering:
            self.invoices.setdefault(invoice.tenant_id, []).append(invoice)

    def of(self, tenant_id: int, day: datetime, spec: MeterSpec) -> Price | None:
        for invoice in self.invoices.get(tenant_id, ()):
            if invoice.period_start <= day < invoice.period_end:
                lines: list[InvoiceLine] = list(invoice.lines.all())
                for line in lines:
                    if line.meter == spec.meter:
                        return Price(line.unit_price, invoice.currency, invoice)
        plan: Plan | None = self.tenants[tenant_id].plan
        if plan is None:
            return None
        return Price(getattr(plan, spec.plan_field), plan.currency, None)


def focus_rows(
    start: datetime, end: datetime, tenant_ids: list[int] | None
) -> Iterator[dict[str, Any]]:
    """FOCUS cost rows for the whole UTC days in [start, end)."""
    days = UsageDay.objects.filter(day__gte=start, day__lt=end)
    if tenant_ids is not None:
        days = days.filter(tenant_id__in=tenant_ids)
    grouped = (
        days.values("day", "tenant_id", "model")
        .annotate(
            prompt=Sum("prompt_tokens"),
            cached=Sum("cached_tokens"),
            output=Sum("output_tokens"),
            kv=Sum("kv_gib_seconds"),
        )
        .order_by("day", "tenant_id", "model")
    )
    tenants = Tenant.objects.select_related("plan")
    if tenant_ids is not None:
        tenants = tenants.filter(id__in=tenant_ids)
    by_id = {tenant.pk: tenant for tenant in tenants}
    prices = _Prices(by_id, start, end)
    for row in grouped.iterator(chunk_size=2000):
        tenant = by_id.get(row["tenant_id"])
        if tenant is None:
            continue
        for spec in METERS:
            consumed = _consumed(spec, row)
            price = prices.of(tenant.pk, row["day"], spec)
            if consumed and price is not None:
                yield _focus_row(tenant, row["day"], row["model"], spec, consumed, price)


def _focus_row(
    tenant: Tenant, day: datetime, model: str, spec: MeterSpec, consumed: Decimal, price: Price
) -> dict[str, Any]:
    with localcontext() as context:
        context.prec = 60
        pricing_quantity = consumed / spec.per_pricing_unit
        cost = pricing_quantity * price.unit_price
    billing_start, billing_end = _billing_period(day, price.invoice)
    sku = f"parity-{spec.meter}"
    return {
        "BilledCost": _plain(cost),
        "BillingAccountId": "parity",
        "BillingAccountName": PROVIDER,
        "BillingCurrency": price.currency,
        "BillingPeriodStart": iso(billing_start),
        "BillingPeriodEnd": iso(billing_end),
        "ChargeCategory": "Usage",
        "ChargeClass": None,
        "ChargeDescription": f"{Meter(spec.meter).label} on {model}",
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodStart": iso(day),
        "ChargePeriodEnd": iso(day + timedelta(days=1)),
        "ConsumedQuantity": _plain(consumed),
        "ConsumedUnit": spec.consumed_unit,
        "ContractedCost": _plain(cost),
        "ContractedUnitPrice": _plain(price.unit_price),
        "EffectiveCost": _plain(cost),
        "InvoiceId": price.invoice.number if price.invoice else None,
        "InvoiceIssuerName": PROVIDER,
        "ListCost": _plain(cost),
        "ListUnitPrice": _plain(price.unit_price),
        "PricingCategory": "Standard",
        "PricingCurrency": price.currency,
        "PricingQuantity": _plain(pricing_quantity),
        "PricingUnit": spec.pricing_unit,
        "ProviderName": PROVIDER,
        "PublisherName": PROVIDER,
        "ResourceId": model,
        "ResourceName": model,
        "ResourceType": "Model",
        "ServiceCategory": "AI and Machine Learning",
        "ServiceName": SERVICE,
        "ServiceSubcategory": "Generative AI",
        "SkuId": sku,
        "SkuPriceId": f"{sku}:{_plain(price.unit_price)}:{price.currency}",
        "SubAccountId": tenant.slug,
        "SubAccountName": tenant.name,
    }


def _billing_period(day: datetime, invoice: Invoice | None) -> tuple[datetime, datetime]:
    if invoice is not None:
        return invoice.period_start, invoice.period_end
    start = day.replace(day=1)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end
