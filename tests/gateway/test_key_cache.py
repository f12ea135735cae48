"""The gateway's key cache: no database round trip per request, and yet a revoked key, a
suspended tenant or a new weight is seen within its one-second lifetime."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from gateway.auth import TTL_S, KeyCache, keys
from tenants.models import ApiKey, IssuedKey, Tenant, TenantStatus


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    clock = Clock()
    monkeypatch.setattr(KeyCache, "clock", clock)
    yield clock


def models(key: IssuedKey) -> Any:
    return Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key.secret}")


def test_a_cached_key_costs_no_database_query(
    alice_key: IssuedKey, clock: Clock, django_assert_num_queries: Any
) -> None:
    assert models(alice_key).status_code == 200

    with django_assert_num_queries(0):
        assert models(alice_key).status_code == 200


def test_a_key_revoked_behind_the_caches_back_is_refused_once_the_entry_lapses(
    alice_key: IssuedKey, clock: Clock
) -> None:
    assert models(alice_key).status_code == 200
    # Another process revokes it: this process's signals never fire.
    ApiKey.objects.filter(pk=alice_key.key.pk).update(revoked_at=timezone.now())

    still_cached = models(alice_key).status_code
    clock.now += TTL_S
    refused = models(alice_key)

    assert still_cached == 200
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"


def test_a_tenant_suspended_behind_the_caches_back_is_refused_once_the_entry_lapses(
    acme: Tenant, alice_key: IssuedKey, clock: Clock
) -> None:
    assert models(alice_key).status_code == 200
    Tenant.objects.filter(pk=acme.pk).update(status=TenantStatus.SUSPENDED)
    clock.now += TTL_S

    assert models(alice_key).status_code == 403


def test_a_revocation_in_this_process_is_refused_at_once(
    alice_key: IssuedKey, clock: Clock
) -> None:
    assert models(alice_key).status_code == 200
    alice_key.key.revoked_at = timezone.now()
    alice_key.key.save()

    assert models(alice_key).status_code == 401


@pytest.mark.django_db(transaction=True)  # the cache loads on another thread: commit first
def test_a_new_weight_reaches_the_principal_within_the_lifetime(
    acme: Tenant, alice_key: IssuedKey, clock: Clock
) -> None:
    header = f"Bearer {alice_key.secret}"
    before = asyncio.run(keys.authenticate(header)).weight
    Tenant.objects.filter(pk=acme.pk).update(weight=Decimal(7))
    clock.now += TTL_S
    after = asyncio.run(keys.authenticate(header)).weight

    assert (before, after) == (float(acme.weight), 7.0)


def test_a_flood_of_one_unknown_key_reads_the_database_once_a_second(
    db: None, clock: Clock, django_assert_num_queries: Any
) -> None:
    bogus = "Bearer pk_live_00000000.notakey"
    with django_assert_num_queries(1):
        statuses = [
            Client().get("/v1/models", HTTP_AUTHORIZATION=bogus).status_code for _ in range(20)
        ]

    assert set(statuses) == {401}


@pytest.mark.django_db(transaction=True)  # the cache loads on another thread: commit first
def test_a_key_in_use_is_reloaded_before_its_entry_lapses_while_requests_go_on(
    acme: Tenant, alice_key: IssuedKey, clock: Clock
) -> None:
    cache = KeyCache()
    header = f"Bearer {alice_key.secret}"
    asyncio.run(cache.authenticate(header))
    Tenant.objects.filter(pk=acme.pk).update(weight=Decimal(7))
    clock.now += TTL_S * 0.75  # past half its lifetime, not past its end

    async def in_use() -> tuple[float, list[float]]:
        served = (await cache.authenticate(header)).weight  # not kept waiting for a reload
        later = []
        for _ in range(100):
            await asyncio.sleep(0.02)
            later.append((await cache.authenticate(header)).weight)
            if later[-1] == 7.0:
                break
        return served, later

    served, later = asyncio.run(in_use())

    assert served == float(acme.weight)
    assert later[-1] == 7.0  # reloaded ahead, though the entry had not lapsed
