"""A database with invoices from before late-usage adjustments migrates intact: every
existing line keeps its numbers and learns what it consumed, in natural units."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("tenants", "0003_rollups_and_invoices")]
AFTER = [("tenants", "0004_invoice_adjustments")]


@pytest.mark.django_db(transaction=True)
def test_existing_invoice_lines_migrate_with_what_they_consumed() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    zero = Decimal(0)
    plan = old.get_model("tenants", "Plan").objects.create(
        name="Old",
        price_input_per_mtok=zero,
        price_cached_input_per_mtok=zero,
        price_output_per_mtok=Decimal(2),
        price_kv_gib_hour=Decimal("2.06"),
    )
    tenant = old.get_model("tenants", "Tenant").objects.create(slug="old", name="Old", plan=plan)
    invoice = old.get_model("tenants", "Invoice").objects.create(
        number="INV-OLD",
        tenant=tenant,
        period_start=datetime(2026, 9, 1, tzinfo=UTC),
        period_end=datetime(2026, 10, 1, tzinfo=UTC),
        total=Decimal("3.50"),
        status="finalized",
    )
    # (meter, quantity, unit, unit price, amount), as 0003 stored lines.
    old_lines = [
        ("output_tokens", "1.234567", "1M tokens", "2", "2.47"),
        ("kv_gib_hours", "0.5", "GiB-hour", "2.06", "1.03"),
    ]
    for meter, quantity, unit, unit_price, amount in old_lines:
        old.get_model("tenants", "InvoiceLine").objects.create(
            invoice=invoice,
            meter=meter,
            description=meter,
            quantity=Decimal(quantity),
            unit=unit,
            unit_price=Decimal(unit_price),
            amount=Decimal(amount),
        )

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps
    migrated = new.get_model("tenants", "InvoiceLine").objects.order_by("meter")

    assert [(line.meter, line.consumed, line.amount, line.adjusts_id) for line in migrated] == [
        ("kv_gib_hours", Decimal("1800.000000000"), Decimal("1.03"), None),
        ("output_tokens", Decimal("1234567.000000000"), Decimal("2.47"), None),
    ]
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
