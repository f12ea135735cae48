"""`manage.py invoices close --period 2026-11`: finalise a closed period's invoices.

`invoices preview --period 2026-11` computes (or recomputes) drafts, also of an open period,
without finalising anything. Both print one line per invoice.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tenants import billing
from tenants.models import Invoice


class Command(BaseCommand):
    help = "Generate invoices per tenant for a billing period (close = finalise, preview = draft)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["close", "preview"])
        parser.add_argument(
            "--period",
            required=True,
            help="YYYY-MM (a calendar month, UTC) or YYYY-MM-DD..YYYY-MM-DD (days, inclusive)",
        )
        parser.add_argument(
            "--tenant", action="append", dest="tenants", help="only this tenant (repeatable)"
        )

    def handle(
        self, *args: Any, action: str, period: str, tenants: list[str] | None, **_: Any
    ) -> None:
        now = timezone.now()
        try:
            billed = billing.parse_period(period)
            if action == "close":
                report = billing.close(billed, now, tenant_slugs=tenants)
                invoices, skipped = report.invoices, report.skipped
            else:
                invoices, skipped = self._preview(billed, tenants)
        except billing.BillingError as error:
            raise CommandError(str(error)) from None
        for invoice in invoices:
            self.stdout.write(
                f"{invoice.number}  {invoice.tenant.slug:<20} {invoice.status:<9} "
                f"{invoice.total} {invoice.currency}"
            )
        for reason in skipped:
            self.stderr.write(self.style.WARNING(f"not billed: {reason}"))
        verb = "finalised" if action == "close" else "drafted"
        done = f"{len(invoices)} invoice(s) {verb} for {billed.label}."
        self.stdout.write(self.style.SUCCESS(done))

    def _preview(
        self, period: billing.Period, slugs: list[str] | None
    ) -> tuple[list[Invoice], list[str]]:
        from tenants.rollups import roll_up_new_usage

        roll_up_new_usage(timezone.now())
        invoices, skipped = [], []
        for tenant in billing.tenants_to_bill(period):
            if slugs is not None and tenant.slug not in slugs:
                continue
            if tenant.plan is None:
                skipped.append(f"{tenant.slug}: no plan")
                continue
            invoices.append(billing.generate(tenant, period))
        return invoices, skipped
