"""Usage written the way production writes it: through the worker's database store (usage rows
and minute sums in one transaction), then rolled up by the rollup job."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.utils import timezone

from tenants.models import ApiKey, Tenant
from tests.usage.factories import usage_of
from usage.records import RequestUsage
from usage.rollups import RollupReport, roll_up_new_usage
from usage.sink import DatabaseUsageStore

# A Monday 10:00 UTC in October 2026: hours and days start on round numbers from here.
T0 = datetime(2026, 10, 5, 10, 0, tzinfo=UTC)


def request_at(
    tenant: Tenant, at: datetime, *, key: ApiKey | None = None, **overrides: Any
) -> RequestUsage:
    return usage_of(tenant, key=key, finished_at=at.timestamp(), **overrides)


def store(*usages: RequestUsage) -> int:
    return DatabaseUsageStore().write(list(usages))


def roll_up() -> RollupReport:
    """A rollup pass that does not wait for rows to settle (nothing else writes in a test)."""
    return roll_up_new_usage(timezone.now(), settle_s=0)


def unix(moment: datetime) -> int:
    return int(moment.timestamp())
