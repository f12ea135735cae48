"""`manage.py invoices close --period 2026-11`: finalise a closed period's invoices.

`invoices preview --period 2026-11` computes (or recomputes) drafts, also of an open period,
without finalising anything. Both print one line per invoice.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from billing import invoices as billing


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
            run = billing.close if action == "close" else billing.draft
            report = run(billed, now, tenant_slugs=tenants)
        except billing.BillingError as error:
            raise CommandError(str(error)) from None
        for invoice in report.invoices:
            self.stdout.write(
                f"{invoice.number}  {invoice.tenant.slug:<20} {invoice.status:<9} "
                f"{invoice.total} {invoice.currency}"
            )
        for reason in report.skipped:
            self.stderr.write(self.style.WARNING(f"not billed: {reason}"))
        verb = "finalised" if action == "close" else "drafted"
        done = f"{len(report.invoices)} invoice(s) {verb} for {billed.label}."
        self.stdout.write(self.style.SUCCESS(done))
