"""The Django admin: edits are audited like the API's; key secrets are shown once."""

import re
from decimal import Decimal

import pytest
from django.test import Client

from tenants.models import ApiKey, AuditEvent, hash_secret

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(staff_user):
    client = Client()
    client.force_login(staff_user)
    return client


def test_changing_a_weight_in_the_tenant_list_is_audited(admin_client_, acme, globex):
    form = {
        "form-TOTAL_FORMS": "2",
        "form-INITIAL_FORMS": "2",
        "form-0-id": str(acme.pk),
        "form-0-weight": "7",
        "form-0-status": "active",
        "form-1-id": str(globex.pk),
        "form-1-weight": "2",
        "form-1-status": "active",
        "_save": "Save",
    }
    response = admin_client_.post("/admin/tenants/tenant/", form)
    assert response.status_code == 302
    acme.refresh_from_db()
    assert acme.weight == Decimal(7)
    event = AuditEvent.objects.get(action="update")
    assert (event.actor_label, event.object_id) == ("admin", str(acme.pk))
    assert event.after["weight"] == "7.0000"


def test_creating_a_key_in_the_admin_shows_the_secret_once(admin_client_, acme):
    response = admin_client_.post(
        "/admin/tenants/apikey/add/", {"tenant": acme.pk, "name": "from-admin", "_save": "Save"}
    )
    assert response.status_code == 200
    page = response.content.decode()
    secret = re.search(r'id="api-key-secret"[^>]*>([^<]+)<', page).group(1)
    key = ApiKey.objects.get(name="from-admin")
    assert key.secret_hash == hash_secret(secret)
    assert (
        secret not in admin_client_.get(f"/admin/tenants/apikey/{key.pk}/change/").content.decode()
    )
    assert AuditEvent.objects.filter(object_type="apikey", action="create").count() == 1


def test_keys_are_revoked_from_the_admin_not_deleted(admin_client_, alice_key):
    response = admin_client_.post(
        "/admin/tenants/apikey/",
        {"action": "revoke_keys", "_selected_action": [alice_key.key.pk]},
    )
    assert response.status_code == 302
    alice_key.key.refresh_from_db()
    assert alice_key.key.is_revoked
    assert AuditEvent.objects.filter(action="revoke").count() == 1


def test_deleting_a_tenant_in_the_admin_is_audited(admin_client_, acme):
    response = admin_client_.post(f"/admin/tenants/tenant/{acme.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action="delete", object_type="tenant").count() == 1


def test_audit_events_are_read_only_in_the_admin(admin_client_, acme):
    admin_client_.post(
        f"/admin/tenants/tenant/{acme.pk}/change/",
        {
            "slug": "acme",
            "name": "Acme",
            "weight": "2",
            "status": "active",
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
        },
    )
    event = AuditEvent.objects.get(action="update")
    assert admin_client_.get("/admin/tenants/auditevent/add/").status_code == 403
    response = admin_client_.post(f"/admin/tenants/auditevent/{event.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_a_bad_weight_in_the_admin_is_a_form_error(admin_client_, acme):
    response = admin_client_.post(
        f"/admin/tenants/tenant/{acme.pk}/change/",
        {
            "slug": "acme",
            "name": "Acme",
            "weight": "0",
            "status": "active",
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "weight" in response.context["adminform"].form.errors
    assert not AuditEvent.objects.exists()


def test_renaming_a_key_in_the_admin_is_audited(admin_client_, alice_key):
    key = alice_key.key
    response = admin_client_.post(
        f"/admin/tenants/apikey/{key.pk}/change/",
        {"name": "renamed", "expires_at_0": "", "expires_at_1": ""},
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="update", object_type="apikey")
    assert (event.before["name"], event.after["name"]) == ("alice", "renamed")
