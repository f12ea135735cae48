"""/api/v1/plans/: staff set Decimal prices; nobody else sees them through this endpoint."""

from decimal import Decimal

import pytest

from tenants.models import AuditEvent, Plan

pytestmark = pytest.mark.django_db

PLAN = {
    "name": "Pro",
    "price_input_per_mtok": "0.150000",
    "price_cached_input_per_mtok": "0.075",
    "price_output_per_mtok": "0.6",
    "price_kv_gib_hour": "0.0125",
    "currency": "EUR",
}


def test_staff_create_a_plan_with_exact_decimal_prices(staff):
    response = staff.post("/api/v1/plans/", PLAN, format="json")
    assert response.status_code == 201, response.json()
    plan = Plan.objects.get(name="Pro")
    assert plan.price_kv_gib_hour == Decimal("0.0125")
    assert response.json()["price_output_per_mtok"] == "0.600000"
    assert AuditEvent.objects.filter(object_type="plan", action="create").count() == 1


def test_staff_patch_a_price_and_it_is_audited(staff, plan):
    response = staff.patch(
        f"/api/v1/plans/{plan.pk}/", {"price_output_per_mtok": "2"}, format="json"
    )
    assert response.status_code == 200
    event = AuditEvent.objects.get(object_type="plan", action="update")
    assert (event.before["price_output_per_mtok"], event.after["price_output_per_mtok"]) == (
        "1.500000",
        "2.000000",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price_input_per_mtok", "-1"),
        ("price_output_per_mtok", "cheap"),
        ("price_kv_gib_hour", "0.0000001"),
        ("currency", "euro"),
        ("colour", "blue"),
    ],
)
def test_it_rejects_bad_plan_fields_by_name(staff, plan, field, value):
    response = staff.patch(f"/api/v1/plans/{plan.pk}/", {field: value}, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_plans_cannot_be_deleted_through_the_api(staff, plan):
    assert staff.delete(f"/api/v1/plans/{plan.pk}/").status_code == 405


def test_plan_names_are_unique(staff, plan):
    response = staff.post("/api/v1/plans/", {**PLAN, "name": plan.name}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()


def test_tenant_keys_and_outsiders_are_refused(alice, outsider, plan):
    for client in (alice, outsider):
        assert client.get("/api/v1/plans/").status_code == 403
        assert client.get(f"/api/v1/plans/{plan.pk}/").status_code == 403
        assert client.post("/api/v1/plans/", PLAN, format="json").status_code == 403


def test_an_unknown_plan_is_404(staff):
    assert staff.get("/api/v1/plans/424242/").status_code == 404
    assert staff.get("/api/v1/plans/not-a-number/").status_code == 404
