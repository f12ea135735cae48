"""/api/v1/me/ for tenant keys, /api/v1/audit/ for staff."""

import pytest

from tenants.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_me_describes_the_keys_tenant(alice, acme, plan):
    body = alice.get("/api/v1/me/").json()
    assert body == {
        "slug": "acme",
        "name": "Acme",
        "weight": "1.0000",
        "status": "active",
        "max_concurrent_requests": None,
        "plan": {"id": plan.pk, "name": "Standard", "currency": "USD"},
    }


def test_me_needs_a_tenant_key(staff, outsider, anonymous):
    assert staff.get("/api/v1/me/").status_code == 403
    assert outsider.get("/api/v1/me/").status_code == 403
    assert anonymous.get("/api/v1/me/").status_code == 401


def test_audit_lists_newest_first(staff, acme):
    staff.patch("/api/v1/tenants/acme/", {"weight": "2"}, format="json")
    staff.patch("/api/v1/tenants/acme/", {"weight": "3"}, format="json")
    rows = staff.get("/api/v1/audit/").json()["results"]
    assert [row["after"]["weight"] for row in rows] == ["3.0000", "2.0000"]


def test_audit_filters_by_object_and_actor(staff, alice, acme, globex):
    staff.patch("/api/v1/tenants/globex/", {"weight": "5"}, format="json")
    alice.post("/api/v1/tenants/acme/keys/", {"name": "x"}, format="json")
    by_object = staff.get("/api/v1/audit/?object_type=tenant&object_id=" + str(globex.pk)).json()
    assert [row["action"] for row in by_object["results"]] == ["update"]
    by_actor = staff.get("/api/v1/audit/?actor_type=api_key").json()
    assert [row["object_type"] for row in by_actor["results"]] == ["apikey"]
    by_label = staff.get("/api/v1/audit/?actor=admin").json()
    assert by_label["count"] == 1


def test_audit_records_never_carry_key_hashes(staff, acme):
    staff.post("/api/v1/tenants/acme/keys/", {"name": "x"}, format="json")
    event = AuditEvent.objects.get(object_type="apikey")
    assert "secret_hash" not in event.after


def test_audit_is_read_only_and_staff_only(staff, alice, outsider, acme):
    assert staff.post("/api/v1/audit/", {}, format="json").status_code == 405
    assert alice.get("/api/v1/audit/").status_code == 403
    assert outsider.get("/api/v1/audit/").status_code == 403


def test_a_bad_audit_date_filter_is_a_400(staff):
    response = staff.get("/api/v1/audit/?since=yesterday")
    assert response.status_code == 400
    assert "since" in response.json()
