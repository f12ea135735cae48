"""Billing: invoices and their lines, priced at each tenant's plan (`tenants.Plan`).

The tables were created by the `tenants` app and keep their names (`db_table`): the models
moved here with state-only migrations, so a database with invoices migrates untouched. The
plans stay with the tenants: a plan is part of a tenant's account, and moving it would
make the two apps depend on each other.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models

from tenants.decimals import minor_unit


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    FINALIZED = "finalized", "Finalized"


class Meter(models.TextChoices):
    """What an invoice line bills; each meter has one price on the plan."""

    INPUT_TOKENS = "input_tokens", "Input tokens"
    CACHED_INPUT_TOKENS = "cached_input_tokens", "Cached input tokens"
    OUTPUT_TOKENS = "output_tokens", "Output tokens"
    KV_GIB_HOURS = "kv_gib_hours", "KV cache GiB-hours"


def _money(verbose_name: str) -> models.DecimalField[Decimal, Decimal]:
    return models.DecimalField(verbose_name, max_digits=18, decimal_places=4)


class Invoice(models.Model):
    """One tenant's bill for one period [period_start, period_end), priced at its plan.

    A draft is recomputed each time it is generated; a finalised invoice never changes.
    The plan's name, prices and currency are copied onto the invoice and its lines, so a
    later price change does not rewrite history.
    """

    number = models.CharField(max_length=64, unique=True)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="invoices")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    status = models.CharField(
        max_length=16, choices=InvoiceStatus.choices, default=InvoiceStatus.DRAFT
    )
    plan_name = models.CharField(max_length=100, blank=True, default="")
    currency = models.CharField(max_length=3, default="USD")
    total = _money("total")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finalized_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "tenants_invoice"  # the table kept its name when the model moved here
        ordering = ["-period_start", "tenant_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "period_start", "period_end"], name="invoice_tenant_period"
            ),
            models.CheckConstraint(
                condition=models.Q(period_end__gt=models.F("period_start")),
                name="invoice_period_not_empty",
            ),
        ]

    def __str__(self) -> str:
        return self.number

    @property
    def is_finalized(self) -> bool:
        return self.status == InvoiceStatus.FINALIZED

    @property
    def total_due(self) -> Decimal:
        """The total at the currency's minor unit (3.75, not the column's 3.7500)."""
        return self.total.quantize(minor_unit(self.currency))


class InvoiceLine(models.Model):
    """quantity x unit_price, rounded once to the currency's minor unit: `amount`."""

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    meter = models.CharField(max_length=32, choices=Meter.choices)
    description = models.CharField(max_length=200)
    # Exact: tokens are whole, GiB-hours carry the nine places of the GiB-second sums.
    quantity = models.DecimalField(max_digits=30, decimal_places=12)
    unit = models.CharField(max_length=32)
    unit_price = models.DecimalField(max_digits=20, decimal_places=10)
    amount = _money("amount")
    # What was consumed, in the meter's natural unit (tokens, GiB-seconds), exactly: what a
    # later invoice subtracts to find the usage that arrived after this one was final.
    consumed = models.DecimalField(max_digits=30, decimal_places=9, null=True, blank=True)
    # Set on an adjustment line: the final invoice whose period this late usage belongs to.
    adjusts = models.ForeignKey(
        "Invoice", null=True, blank=True, on_delete=models.PROTECT, related_name="adjusted_by"
    )

    class Meta:
        db_table = "tenants_invoiceline"  # the table kept its name when the model moved here
        ordering = ["invoice_id", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["invoice", "meter"],
                condition=models.Q(adjusts__isnull=True),
                name="invoice_line_meter",
            ),
            models.UniqueConstraint(
                fields=["invoice", "meter", "adjusts"],
                condition=models.Q(adjusts__isnull=False),
                name="invoice_line_meter_adjusts",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.invoice_id} {self.meter} {self.amount}"

    @property
    def amount_due(self) -> Decimal:
        return self.amount.quantize(minor_unit(self.invoice.currency))
