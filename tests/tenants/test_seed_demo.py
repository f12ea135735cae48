"""`manage.py seed_demo`, which `make run` calls: tenants 1/2/4, a plan, working keys."""

import re
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command

from tenants.models import ApiKey, Tenant
from tests.tenants.factories import client_with_key

pytestmark = pytest.mark.django_db


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_it_seeds_three_tenants_weighted_one_two_four():
    seed()
    weights = dict(Tenant.objects.values_list("slug", "weight"))
    assert weights == {"acme": Decimal(1), "globex": Decimal(2), "initech": Decimal(4)}
    assert all(t.plan is not None for t in Tenant.objects.all())


def test_the_printed_keys_and_admin_password_work():
    output = seed()
    secrets = re.findall(r"pk_live_\w{8}_[\w-]+", output)
    assert len(secrets) == 3
    assert client_with_key(secrets[2]).get("/api/v1/me/").json()["slug"] == "initech"
    password = re.search(r"username admin  password (\S+)", output).group(1)
    assert authenticate(username="admin", password=password).is_staff


def test_running_it_again_replaces_the_demo_keys():
    first = re.findall(r"pk_live_\w{8}_[\w-]+", seed())
    second = re.findall(r"pk_live_\w{8}_[\w-]+", seed())
    assert Tenant.objects.count() == 3
    assert client_with_key(first[0]).get("/api/v1/me/").status_code == 401
    assert client_with_key(second[0]).get("/api/v1/me/").status_code == 200
    assert ApiKey.objects.usable().count() == 3
