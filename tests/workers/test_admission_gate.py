"""The admission gate: a tenant's own limit, and its weighted share of a full pool.

Run against both implementations: Redis (production) and in-process (embedded mode).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings

from workers.channels import Channels, LocalChannels, SlotRequest
from workers.redis_channels import RedisChannels

POOL = 4


@pytest.fixture(params=["redis", "local"])
def channels(request: pytest.FixtureRequest) -> Iterator[Channels]:
    if request.param == "local":
        yield LocalChannels()
        return
    # A database of its own on the suite's Redis: these tests flush it.
    url = (settings.REDIS_URL or "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/7"
    redis_channels = RedisChannels(url)
    redis_channels.redis.flushdb()
    yield redis_channels
    redis_channels.redis.flushdb()
    redis_channels.close()


def slot(tenant: str, n: int, weight: float, limit: int = 1000) -> SlotRequest:
    return SlotRequest(tenant, f"{tenant}-{n}", weight, limit, POOL)


def test_a_tenant_over_its_own_limit_is_refused(channels: Channels) -> None:
    assert channels.admit(slot("acme", 1, 1.0, limit=1)).admitted
    verdict = channels.admit(slot("acme", 2, 1.0, limit=1))

    assert (verdict.admitted, verdict.reason) == (False, "tenant")


def test_in_a_full_pool_a_heavy_tenant_past_its_share_waits_but_a_light_one_gets_in(
    channels: Channels,
) -> None:
    for n in range(POOL):  # the heavy tenant fills the pool while it is alone
        assert channels.admit(slot("heavy", n, 3.0)).admitted

    heavy = channels.admit(slot("heavy", 99, 3.0))
    light = channels.admit(slot("light", 1, 1.0))
    light_again = channels.admit(slot("light", 2, 1.0))

    assert (heavy.admitted, heavy.reason) == (False, "pool")
    assert light.admitted  # its share of 4 slots at weights 3:1 is one
    assert (light_again.admitted, light_again.reason) == (False, "pool")


def test_a_released_slot_is_free_again(channels: Channels) -> None:
    assert channels.admit(slot("acme", 1, 1.0, limit=1)).admitted
    channels.release("acme", "acme-1")

    assert channels.admit(slot("acme", 2, 1.0, limit=1)).admitted
    assert channels.in_flight("acme") == 1
