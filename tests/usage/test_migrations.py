"""A database with usage from before the usage models moved to the `usage` app migrates
intact: the same tables, the same rows, read through the new app; permissions follow."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [
    ("tenants", "0004_invoice_adjustments"),
    ("usage", "0001_initial"),
    ("contenttypes", "0002_remove_content_type_name"),
]
AFTER = [("usage", "0002_usage_models_from_tenants")]
T = datetime(2026, 11, 2, 12, 30, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_usage_rows_stay_where_they_are_and_are_read_through_the_usage_app() -> None:
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
    for n in range(3):
        old.get_model("tenants", "UsageRecord").objects.create(
            request_id=f"r{n}",
            tenant=tenant,
            model="m",
            prompt_tokens=10 * n,
            output_tokens=n,
            status="finished",
            finished_at=T,
        )
    old.get_model("tenants", "UsageMinute").objects.create(
        minute=T.replace(second=0), tenant=tenant, model="m", num_requests=3, output_tokens=3
    )
    old.get_model("tenants", "RollupCursor").objects.create(name="hourly", created_at=T)
    content_types = old.get_model("contenttypes", "ContentType")
    content_types.objects.get_or_create(app_label="tenants", model="usagerecord")

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps
    records = new.get_model("usage", "UsageRecord").objects.order_by("request_id")

    assert [(r.request_id, r.tenant.slug, r.prompt_tokens, r.output_tokens) for r in records] == [
        ("r0", "old", 0, 0),
        ("r1", "old", 10, 1),
        ("r2", "old", 20, 2),
    ]
    assert new.get_model("usage", "UsageMinute").objects.get().num_requests == 3
    assert new.get_model("usage", "RollupCursor").objects.get().name == "hourly"
    moved = new.get_model("contenttypes", "ContentType").objects.filter(model="usagerecord")
    assert list(moved.values_list("app_label", flat=True)) == ["usage"]
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
