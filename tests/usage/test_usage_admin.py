"""The usage admin pages: staff can list and filter usage, nobody can add, edit or delete it."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tenants.models import Tenant
from tests.usage.factories import usage_of
from usage.models import UsageMinute, UsageRecord
from usage.sink import DatabaseUsageStore

pytestmark = pytest.mark.django_db


@pytest.fixture
def usage(acme: Tenant, globex: Tenant) -> None:
    DatabaseUsageStore().write([usage_of(acme, "acme-1"), usage_of(globex, "globex-1")])


@pytest.mark.parametrize("model", ["usagerecord", "usageminute"])
def test_staff_can_list_usage(staff_client: Client, usage: None, model: str) -> None:
    response = staff_client.get(f"/admin/usage/{model}/")

    assert response.status_code == 200


def test_the_usage_list_filters_by_tenant_status_and_model(
    staff_client: Client, usage: None, acme: Tenant
) -> None:
    response = staff_client.get(
        "/admin/usage/usagerecord/",
        {"tenant__id__exact": acme.pk, "status__exact": "finished", "model": "tiny-random"},
    )

    assert response.status_code == 200
    assert list(response.context["cl"].queryset) == [UsageRecord.objects.get(tenant=acme)]


@pytest.mark.parametrize("model", [UsageRecord, UsageMinute])
def test_usage_cannot_be_added_changed_or_deleted(
    staff_client: Client, usage: None, model: Any
) -> None:
    row = model.objects.first()
    base = f"/admin/usage/{model._meta.model_name}"

    assert staff_client.get(f"{base}/add/").status_code == 403
    assert staff_client.post(f"{base}/{row.pk}/change/", {}).status_code == 403
    assert staff_client.post(f"{base}/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert model.objects.filter(pk=row.pk).exists()
