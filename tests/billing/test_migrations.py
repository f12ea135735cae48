"""A database with invoices from before the invoice models moved to the `billing` app
migrates intact: the same tables and rows, read through the new app."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("tenants", "0005_usage_models_move_to_usage")]
AFTER = [("billing", "0001_initial")]


@pytest.mark.django_db(transaction=True)
def test_invoices_and_their_lines_stay_where_they_are_and_are_read_through_billing() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    zero = Decimal(0)
    plan = old.get_model("tenants", "Plan").objects.create(
        name="Old",
        price_input_per_mtok=zero,
        price_cached_input_per_mtok=zero,
        price_output_per_mtok=Decimal(2),
        price_kv_gib_hour=zero,
    )
    tenant = old.get_model("tenants", "Tenant").objects.create(slug="old", name="Old", plan=plan)
    invoice = old.get_model("tenants", "Invoice").objects.create(
        number="INV-OLD",
        tenant=tenant,
        period_start=datetime(2026, 9, 1, tzinfo=UTC),
        period_end=datetime(2026, 10, 1, tzinfo=UTC),
        total=Decimal("2.47"),
        status="finalized",
    )
    old.get_model("tenants", "InvoiceLine").objects.create(
        invoice=invoice,
        meter="output_tokens",
        description="Output tokens",
        quantity=Decimal("1.234567"),
        unit="1M tokens",
        unit_price=Decimal(2),
        amount=Decimal("2.47"),
        consumed=Decimal(1234567),
    )

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps
    moved = new.get_model("billing", "Invoice").objects.get()

    assert (moved.number, moved.tenant.slug, moved.total, moved.status) == (
        "INV-OLD",
        "old",
        Decimal("2.4700"),
        "finalized",
    )
    assert [(line.meter, line.amount) for line in moved.lines.all()] == [
        ("output_tokens", Decimal("2.4700"))
    ]
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
