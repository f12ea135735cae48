"""API keys: shown once, stored hashed, revocable, scoped to their tenant."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from tenants.authentication import ApiKeyAuthentication
from tenants.models import ApiKey, AuditEvent, hash_secret
from tests.tenants.factories import client_with_key, make_key

pytestmark = pytest.mark.django_db


def test_creating_a_key_returns_its_secret_once(staff, acme):
    response = staff.post("/api/v1/tenants/acme/keys/", {"name": "ci"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["secret"].startswith(body["prefix"] + "_")
    assert body["prefix"].startswith("pk_live_") and len(body["prefix"]) == 16
    listing = staff.get("/api/v1/tenants/acme/keys/").json()
    assert listing["count"] == 1
    assert "secret" not in listing["results"][0]
    assert "secret_hash" not in listing["results"][0]


def test_the_secret_authenticates_as_its_tenant(staff, acme):
    secret = staff.post("/api/v1/tenants/acme/keys/", {"name": "ci"}, format="json").json()[
        "secret"
    ]
    me = client_with_key(secret).get("/api/v1/me/")
    assert me.status_code == 200
    assert me.json()["slug"] == "acme"


def test_the_database_holds_no_plaintext_secret(staff, acme, capsys):
    secret = staff.post("/api/v1/tenants/acme/keys/", {"name": "ci"}, format="json").json()[
        "secret"
    ]
    client_with_key(secret).get("/api/v1/me/")
    call_command("dumpdata", "--all")
    dump = capsys.readouterr().out
    assert secret not in dump
    assert secret[len("pk_live_00000000_") :] not in dump
    assert hash_secret(secret) in dump  # the dump is real: it does contain the hash


def test_the_secret_is_long_and_random(acme):
    issued = [make_key(acme) for _ in range(20)]
    random_parts = {key.secret.removeprefix(key.key.prefix + "_") for key in issued}
    assert len(random_parts) == 20
    assert all(len(part) >= 43 for part in random_parts)  # 256 bits, url-safe base64


def test_a_tenant_can_create_its_own_keys(alice, acme):
    response = alice.post("/api/v1/tenants/acme/keys/", {"name": "mine"}, format="json")
    assert response.status_code == 201
    assert AuditEvent.objects.get(object_type="apikey", action="create").actor_label.startswith(
        "acme/"
    )


def test_a_tenant_key_gets_404_for_another_tenants_keys(alice, bob_key):
    assert alice.get("/api/v1/tenants/globex/keys/").status_code == 404
    assert (
        alice.post("/api/v1/tenants/globex/keys/", {"name": "x"}, format="json").status_code == 404
    )
    own_path = f"/api/v1/tenants/globex/keys/{bob_key.key.pk}/"
    assert alice.delete(own_path).status_code == 404
    assert alice.get(f"/api/v1/tenants/acme/keys/{bob_key.key.pk}/").status_code == 404
    assert alice.delete(f"/api/v1/tenants/acme/keys/{bob_key.key.pk}/").status_code == 404
    bob_key.key.refresh_from_db()
    assert not bob_key.key.is_revoked


def test_revoking_a_key_makes_it_401(staff, acme, alice, alice_key):
    assert alice.get("/api/v1/me/").status_code == 200
    response = staff.delete(f"/api/v1/tenants/acme/keys/{alice_key.key.pk}/")
    assert response.status_code == 204
    assert alice.get("/api/v1/me/").status_code == 401
    event = AuditEvent.objects.get(action="revoke")
    assert event.object_id == str(alice_key.key.pk)


def test_revoking_twice_is_harmless_and_audited_once(staff, alice_key):
    path = f"/api/v1/tenants/acme/keys/{alice_key.key.pk}/"
    assert staff.delete(path).status_code == 204
    assert staff.delete(path).status_code == 204
    assert AuditEvent.objects.filter(action="revoke").count() == 1


def test_a_tenant_may_revoke_its_own_key(alice, alice_key):
    assert alice.delete(f"/api/v1/tenants/acme/keys/{alice_key.key.pk}/").status_code == 204
    assert alice.get("/api/v1/me/").status_code == 401


def test_an_expired_key_is_401(acme):
    issued = make_key(acme, expires_at=timezone.now() + timedelta(hours=1))
    client = client_with_key(issued.secret)
    assert client.get("/api/v1/me/").status_code == 200
    ApiKey.objects.filter(pk=issued.key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get("/api/v1/me/").status_code == 401


def test_expiry_follows_the_authentication_clock(acme, monkeypatch):
    issued = make_key(acme, expires_at=timezone.now() + timedelta(hours=1))
    later = timezone.now() + timedelta(hours=2)
    monkeypatch.setattr(ApiKeyAuthentication, "clock", staticmethod(lambda: later))
    assert client_with_key(issued.secret).get("/api/v1/me/").status_code == 401


@pytest.mark.parametrize(
    "header",
    ["Bearer pk_live_00000000_nope", "Bearer", "Bearer a b", "Bearer \u00e9t\u00e9", "Bearer x"],
)
def test_unknown_or_malformed_keys_are_401(anonymous, acme, header):
    anonymous.credentials(HTTP_AUTHORIZATION=header.encode("utf-8").decode("latin-1"))
    response = anonymous.get("/api/v1/me/")
    assert response.status_code == 401
    assert "detail" in response.json()


def test_a_key_with_the_right_prefix_but_wrong_secret_is_401(alice_key):
    forged = alice_key.key.prefix + "_" + "A" * 43
    assert client_with_key(forged).get("/api/v1/me/").status_code == 401


def test_a_suspended_tenants_key_is_403(alice, acme):
    acme.status = "suspended"
    acme.save()
    response = alice.get("/api/v1/me/")
    assert response.status_code == 403
    assert "suspended" in response.json()["detail"]


def test_an_expiry_in_the_past_is_refused(staff, acme):
    body = {"name": "old", "expires_at": "2001-01-01T00:00:00Z"}
    response = staff.post("/api/v1/tenants/acme/keys/", body, format="json")
    assert response.status_code == 400
    assert "expires_at" in response.json()


def test_a_key_needs_a_name(staff, acme):
    response = staff.post("/api/v1/tenants/acme/keys/", {}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()


def test_keys_can_be_filtered_by_activity(staff, acme, alice_key):
    make_key(acme, "spare")
    staff.delete(f"/api/v1/tenants/acme/keys/{alice_key.key.pk}/")
    active = staff.get("/api/v1/tenants/acme/keys/?active=true").json()["results"]
    revoked = staff.get("/api/v1/tenants/acme/keys/?active=false").json()["results"]
    assert [row["name"] for row in active] == ["spare"]
    assert [row["name"] for row in revoked] == ["alice"]


def test_last_used_is_recorded_at_most_once_a_minute(alice, alice_key):
    alice.get("/api/v1/me/")
    alice_key.key.refresh_from_db()
    first = alice_key.key.last_used_at
    assert first is not None
    alice.get("/api/v1/me/")
    alice_key.key.refresh_from_db()
    assert alice_key.key.last_used_at == first  # throttled through the (Redis) cache
