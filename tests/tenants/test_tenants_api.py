"""/api/v1/tenants/: staff manage tenants and weights; keys never see other tenants."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tenants.models import AuditEvent, Tenant

pytestmark = pytest.mark.django_db


def test_staff_list_all_tenants_paginated(staff, acme, globex):
    response = staff.get("/api/v1/tenants/")
    assert response.status_code == 200
    assert response.json()["count"] == 2
    assert [row["slug"] for row in response.json()["results"]] == ["acme", "globex"]


def test_staff_filter_tenants_by_status(staff, acme, globex):
    Tenant.objects.filter(pk=globex.pk).update(status="suspended")
    response = staff.get("/api/v1/tenants/?status=suspended")
    assert [row["slug"] for row in response.json()["results"]] == ["globex"]


def test_an_unknown_filter_value_is_a_400(staff, acme):
    response = staff.get("/api/v1/tenants/?status=sleeping")
    assert response.status_code == 400
    assert "status" in response.json()


def test_staff_create_a_tenant_and_it_is_audited(staff, plan):
    body = {"slug": "initech", "name": "Initech", "weight": "4", "plan": plan.pk}
    response = staff.post("/api/v1/tenants/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["weight"] == "4.0000"
    event = AuditEvent.objects.get(object_type="tenant", action="create")
    assert event.actor_label == "admin"
    assert event.after["slug"] == "initech"


def test_weight_defaults_to_one(staff):
    response = staff.post("/api/v1/tenants/", {"slug": "solo", "name": "Solo"}, format="json")
    assert response.status_code == 201
    assert Tenant.objects.get(slug="solo").weight == Decimal(1)


def test_patching_the_weight_changes_it_and_records_before_and_after(staff, acme):
    response = staff.patch("/api/v1/tenants/acme/", {"weight": "3"}, format="json")
    assert response.status_code == 200, response.json()
    acme.refresh_from_db()
    assert acme.weight == Decimal(3)
    event = AuditEvent.objects.get(object_type="tenant", action="update")
    assert (event.before["weight"], event.after["weight"]) == ("1.0000", "3.0000")


def test_a_patch_that_changes_nothing_writes_no_audit_event(staff, acme):
    staff.patch("/api/v1/tenants/acme/", {"weight": "1"}, format="json")
    assert not AuditEvent.objects.filter(action="update").exists()


@pytest.mark.parametrize(
    "weight", ["0", "-1", "abc", "1000001", "1e9", "NaN", "Infinity", "0.00001", None, ""]
)
def test_it_rejects_a_bad_weight_naming_the_field(staff, acme, weight):
    response = staff.patch("/api/v1/tenants/acme/", {"weight": weight}, format="json")
    assert response.status_code == 400
    assert "weight" in response.json()
    acme.refresh_from_db()
    assert acme.weight == Decimal(1)


def test_it_accepts_the_largest_allowed_weight(staff, acme):
    response = staff.patch("/api/v1/tenants/acme/", {"weight": "1000000"}, format="json")
    assert response.status_code == 200


def test_it_rejects_a_duplicate_slug(staff, acme):
    response = staff.post("/api/v1/tenants/", {"slug": "acme", "name": "Again"}, format="json")
    assert response.status_code == 400
    assert "slug" in response.json()


def test_it_rejects_a_slug_that_is_not_url_safe(staff):
    response = staff.post("/api/v1/tenants/", {"slug": "a b/c", "name": "X"}, format="json")
    assert response.status_code == 400
    assert "slug" in response.json()


def test_it_rejects_unknown_fields(staff, acme):
    response = staff.patch("/api/v1/tenants/acme/", {"wieght": "3"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"wieght": ["Unknown or read-only field."]}


def test_the_slug_cannot_be_changed(staff, acme):
    response = staff.patch("/api/v1/tenants/acme/", {"slug": "acme2"}, format="json")
    assert response.status_code == 400
    assert "slug" in response.json()


def test_malformed_json_is_a_400(staff, acme):
    response = staff.generic(
        "PATCH", "/api/v1/tenants/acme/", '{"weight": ', content_type="application/json"
    )
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_a_json_list_body_is_a_400(staff):
    response = staff.post("/api/v1/tenants/", [1, 2], format="json")
    assert response.status_code == 400


def test_an_unknown_plan_is_a_400(staff, acme):
    response = staff.patch("/api/v1/tenants/acme/", {"plan": 999999}, format="json")
    assert response.status_code == 400
    assert "plan" in response.json()


def test_staff_delete_a_tenant_and_it_is_audited(staff, acme):
    response = staff.delete("/api/v1/tenants/acme/")
    assert response.status_code == 204
    assert not Tenant.objects.filter(slug="acme").exists()
    event = AuditEvent.objects.get(action="delete", object_type="tenant")
    assert event.before["slug"] == "acme"


def test_an_unknown_tenant_is_a_json_404(staff):
    response = staff.get("/api/v1/tenants/nobody/")
    assert response.status_code == 404
    assert response.json() == {"detail": "No Tenant matches the given query."}


def test_a_tenant_key_cannot_list_tenants(alice, globex):
    assert alice.get("/api/v1/tenants/").status_code == 403


def test_a_tenant_key_gets_404_for_another_tenants_object(alice, globex):
    assert alice.get("/api/v1/tenants/globex/").status_code == 404
    assert alice.patch("/api/v1/tenants/globex/", {"weight": "9"}, format="json").status_code == 404
    assert alice.delete("/api/v1/tenants/globex/").status_code == 404
    globex.refresh_from_db()
    assert globex.weight == Decimal(2)


def test_a_tenant_key_cannot_change_its_own_weight(alice, acme):
    response = alice.patch("/api/v1/tenants/acme/", {"weight": "100"}, format="json")
    assert response.status_code == 403
    acme.refresh_from_db()
    assert acme.weight == Decimal(1)


def test_a_signed_in_non_staff_user_is_refused(outsider, acme):
    assert outsider.get("/api/v1/tenants/").status_code == 403
    assert outsider.get("/api/v1/tenants/acme/").status_code == 403


def test_an_anonymous_caller_gets_401_with_a_bearer_challenge(anonymous, acme):
    response = anonymous.get("/api/v1/tenants/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_staff_can_sign_in_with_http_basic(staff_user, acme):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION="Basic YWRtaW46YWRtaW4tcGFzc3dvcmQ="
    )  # admin:admin-password
    assert client.get("/api/v1/tenants/").status_code == 200


def test_a_change_whose_audit_record_fails_is_rolled_back(staff, acme, monkeypatch):
    from tenants import audit

    def broken_record(*args, **kwargs):
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr(audit, "record", broken_record)
    staff.raise_request_exception = False
    response = staff.patch("/api/v1/tenants/acme/", {"weight": "5"}, format="json")
    assert response.status_code == 500
    acme.refresh_from_db()
    assert acme.weight == Decimal(1)


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_concurrent_requests", 0), ("max_concurrent_requests", -5), ("status", "paused")],
)
def test_it_rejects_bad_limits_and_statuses_by_name(staff, acme, field, value):
    response = staff.patch("/api/v1/tenants/acme/", {field: value}, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_suspending_a_tenant_through_the_api_locks_out_its_keys(staff, alice, acme):
    assert (
        staff.patch("/api/v1/tenants/acme/", {"status": "suspended"}, format="json").status_code
        == 200
    )
    assert alice.get("/api/v1/me/").status_code == 403
    assert (
        staff.patch("/api/v1/tenants/acme/", {"status": "active"}, format="json").status_code == 200
    )
    assert alice.get("/api/v1/me/").status_code == 200
