"""The fixed cast of the control-plane tests (factories live in factories.py).

- `staff`: an operator with a Django staff login.
- `acme` (alice's key) and `globex` (bob's key): two tenants, each the other's stranger.
- `outsider`: a signed-in Django user who is neither staff nor a tenant.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from tenants.models import IssuedKey, Plan, Tenant
from tests.tenants.factories import client_with_key, make_key, make_plan, make_tenant


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # PBKDF2's million rounds are the point in production and pure cost in tests that sign
    # in over HTTP Basic on every request.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    # The cache is a real Redis shared across tests: start each test from a clean slate.
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def plan(db: None) -> Plan:
    return make_plan(name="Standard")


@pytest.fixture
def acme(plan: Plan) -> Tenant:
    return make_tenant("acme", plan=plan)


@pytest.fixture
def globex(plan: Plan) -> Tenant:
    return make_tenant("globex", plan=plan, weight=Decimal(2))


@pytest.fixture
def alice_key(acme: Tenant) -> IssuedKey:
    return make_key(acme, "alice")


@pytest.fixture
def bob_key(globex: Tenant) -> IssuedKey:
    return make_key(globex, "bob")


@pytest.fixture
def alice(alice_key: IssuedKey) -> APIClient:
    return client_with_key(alice_key.secret)


@pytest.fixture
def bob(bob_key: IssuedKey) -> APIClient:
    return client_with_key(bob_key.secret)


@pytest.fixture
def staff_user(db: None) -> Any:
    return get_user_model().objects.create_user(
        "admin", "admin@example.com", "admin-password", is_staff=True, is_superuser=True
    )


@pytest.fixture
def staff_client(staff_user: Any) -> Client:
    """A staff user signed in to the admin (a session, not the API's basic auth)."""
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def staff(staff_user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(staff_user)
    return client


@pytest.fixture
def outsider(db: None) -> APIClient:
    user = get_user_model().objects.create_user("charlie", password="charlie-password")
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()


@pytest.fixture(autouse=True)
def _fresh_key_cache() -> None:
    # The gateway caches keys for a second; each test starts with none cached.
    from gateway.auth import keys

    keys.clear()
