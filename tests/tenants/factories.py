"""Small factories with keyword defaults for the control-plane tests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rest_framework.test import APIClient

from tenants.models import ApiKey, IssuedKey, Plan, Tenant


def make_plan(**overrides: Any) -> Plan:
    fields: dict[str, Any] = {
        "name": f"plan-{Plan.objects.count() + 1}",
        "price_input_per_mtok": Decimal("0.50"),
        "price_cached_input_per_mtok": Decimal("0.25"),
        "price_output_per_mtok": Decimal("1.50"),
        "price_kv_gib_hour": Decimal("0.10"),
        **overrides,
    }
    return Plan.objects.create(**fields)


def make_tenant(slug: str = "tenant", **overrides: Any) -> Tenant:
    fields: dict[str, Any] = {"name": slug.title(), "weight": Decimal(1), **overrides}
    return Tenant.objects.create(slug=slug, **fields)


def make_key(tenant: Tenant, name: str = "default", **overrides: Any) -> IssuedKey:
    return ApiKey.issue(tenant, name, **overrides)


def client_with_key(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client
