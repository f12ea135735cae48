"""The quarantine in the admin: staff see each refused row with its error, and a retry
bills a row whose cause was fixed while a row still bad stays, with the new error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from tenants.models import Tenant
from tests.usage.factories import usage_of
from usage.models import QuarantinedUsage, UsageRecord
from usage.sink import Quarantined
from usage.store_db import DatabaseUsageStore

pytestmark = pytest.mark.django_db


def quarantine(tenant: Tenant, request_id: str, **overrides: Any) -> QuarantinedUsage:
    payload = json.dumps(usage_of(tenant, request_id, **overrides).to_dict())
    DatabaseUsageStore().quarantine([Quarantined(payload, "refused", request_id, "worker-log")])
    return QuarantinedUsage.objects.get(request_id=request_id)


def retry(client: Client, *rows: QuarantinedUsage) -> Any:
    return client.post(
        "/admin/usage/quarantinedusage/",
        {"action": "retry", "_selected_action": [row.pk for row in rows]},
        follow=True,
    )


def test_staff_see_a_quarantined_row_with_its_error(staff_client: Client, acme: Tenant) -> None:
    quarantine(acme, "bad-1", app="nul\x00")

    page = staff_client.get("/admin/usage/quarantinedusage/").content.decode()

    assert "bad-1" in page and "refused" in page


def test_retry_bills_a_fixed_row_and_keeps_a_row_that_is_still_bad(
    staff_client: Client, acme: Tenant
) -> None:
    fixed = quarantine(acme, "fixed")  # its cause is gone: the row itself is fine
    still_bad = quarantine(acme, "still-bad", app="nul\x00")

    response = retry(staff_client, fixed, still_bad)

    assert response.status_code == 200
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["fixed"]
    left = QuarantinedUsage.objects.get()
    assert left.request_id == "still-bad"
    assert "app" in left.error and left.retried_at is not None


def test_quarantining_the_same_payload_twice_keeps_one_row(acme: Tenant) -> None:
    quarantine(acme, "twice")
    quarantine(acme, "twice")

    assert QuarantinedUsage.objects.filter(request_id="twice").count() == 1
