"""Run claims (a request runs at most once at a time) and restart decisions, on both
stores. The cast: deliveries `first` and `second` of request `r1`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from django.conf import settings

from wire.channels import Channels, LocalChannels
from wire.redis_channels import RedisChannels
from wire.runs import GO_ON, RUN_LEASE_S

FIRST, SECOND = "worker-a#1", "worker-b#2"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["redis", "local"])
def channels(request: pytest.FixtureRequest) -> Iterator[Channels]:
    if request.param == "local":
        yield LocalChannels(clock=FakeClock())
        return
    url = (settings.REDIS_URL or "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/7"
    redis_channels = RedisChannels(url)
    redis_channels.redis.flushdb()
    yield redis_channels
    redis_channels.redis.flushdb()
    redis_channels.close()


def let_the_claim_lapse(channels: Channels, request_id: str) -> None:
    """As if the holder's worker died a whole lease ago."""
    if isinstance(channels, RedisChannels):
        channels.redis.delete("parity:run:" + request_id)
    else:
        clock = channels._runs_clock
        assert isinstance(clock, FakeClock)
        clock.now += RUN_LEASE_S + 1


def test_a_second_delivery_cannot_claim_a_run_the_first_holds(channels: Channels) -> None:
    assert channels.claim_run("r1", FIRST)
    assert not channels.claim_run("r1", SECOND)
    assert channels.claim_run("r1", FIRST)  # the holder's own claim again: still its own


def test_a_released_run_can_be_claimed_by_the_next_delivery(channels: Channels) -> None:
    channels.claim_run("r1", FIRST)
    channels.release_run("r1", SECOND)  # not the holder: changes nothing
    assert not channels.claim_run("r1", SECOND)
    channels.release_run("r1", FIRST)
    assert channels.claim_run("r1", SECOND)


def test_a_run_whose_holder_stopped_renewing_it_passes_to_the_next_delivery(
    channels: Channels,
) -> None:
    channels.claim_run("r1", FIRST)
    let_the_claim_lapse(channels, "r1")
    assert channels.claim_run("r1", SECOND)
    # The first holder, back from its stall, learns that it lost the run.
    assert channels.renew_runs({"r1": FIRST}) == {"r1"}
    assert channels.renew_runs({"r1": SECOND}) == set()


def test_renewing_keeps_live_claims_and_retakes_one_that_lapsed_unclaimed(
    channels: Channels,
) -> None:
    channels.claim_run("r1", FIRST)
    channels.claim_run("r2", FIRST)
    let_the_claim_lapse(channels, "r2")
    assert channels.renew_runs({"r1": FIRST, "r2": FIRST}) == set()
    assert not channels.claim_run("r1", SECOND)
    assert not channels.claim_run("r2", SECOND)


def test_a_restarted_streams_decision_is_unknown_until_its_gateway_answers(
    channels: Channels,
) -> None:
    assert channels.restart_decision("r1") is None
    asyncio.run(channels.adecide_restart("r1", 17))
    asyncio.run(channels.adecide_restart("r2", GO_ON))
    assert channels.restart_decision("r1") == 17
    assert channels.restart_decision("r2") == GO_ON


def test_a_gateway_call_on_a_connection_redis_closed_runs_again_on_a_fresh_one() -> None:
    # After a Redis restart every pooled connection is dead: a restart decision sent on one
    # failed, and its stream was cut (seen in the fault suite).
    url = (settings.REDIS_URL or "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/7"
    channels = RedisChannels(url)

    async def body() -> int | None:
        client = channels._async_client()
        await client.ping()  # a pooled connection, open
        # Closed from another connection, as a restarting server closes them all.
        assert channels.redis.client_kill_filter(_id=await client.client_id()) == 1
        await channels.adecide_restart("r1", 5)
        return channels.restart_decision("r1")

    try:
        assert asyncio.run(body()) == 5
    finally:
        channels.redis.delete("parity:restart:r1")
        channels.close()
