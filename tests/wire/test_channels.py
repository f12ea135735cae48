"""Event streams from the workers to the gateway, on both stores: Redis (production: one
inbox per gateway event loop) and in-process (embedded mode)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import pytest
from django.conf import settings

from wire.channels import Channels, Event, LocalChannels
from wire.protocol import coalesce_deltas, delta_event, done_event, start_event
from wire.redis_channels import RedisChannels


@pytest.fixture(params=["redis", "local"])
def channels(request: pytest.FixtureRequest) -> Iterator[Channels]:
    if request.param == "local":
        yield LocalChannels()
        return
    url = (settings.REDIS_URL or "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/7"
    redis_channels = RedisChannels(url)
    redis_channels.redis.flushdb()
    yield redis_channels
    redis_channels.redis.flushdb()
    redis_channels.close()


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


async def receive_all(channels: Channels, request_id: str, count: int) -> list[Event]:
    events: list[Event] = []
    while len(events) < count:
        batch = await channels.receive(request_id, timeout_s=5)
        assert batch, f"{request_id}: only {events} arrived"
        events += batch
    return events


async def receive_all_until_done(channels: Channels, request_id: str) -> list[Event]:
    events: list[Event] = []
    while not events or events[-1]["type"] != "done":
        batch = await channels.receive(request_id, timeout_s=5)
        assert batch, f"{request_id}: only {events} arrived"
        events += batch
    return events


def test_a_requests_events_arrive_in_order_at_the_address_it_gave(channels: Channels) -> None:
    async def body() -> None:
        address = channels.expect("r1")
        sent = [start_event(1, 3), delta_event("a", 1), delta_event("b", 1), done_event("stop", {})]
        for event in sent:
            channels.publish("r1", event, address)

        received = await receive_all_until_done(channels, "r1")

        # Deltas close together may arrive joined (`wire/pacing.py`); nothing else changes.
        assert coalesce_deltas(received) == coalesce_deltas(sent)

    run(body)


def test_two_requests_on_one_gateway_each_get_their_own_events(channels: Channels) -> None:
    async def body() -> None:
        first, second = channels.expect("r1"), channels.expect("r2")
        channels.publish("r1", delta_event("one", 1), first)
        channels.publish("r2", delta_event("two", 1), second)

        assert await receive_all(channels, "r2", 1) == [delta_event("two", 1)]
        assert await receive_all(channels, "r1", 1) == [delta_event("one", 1)]

    run(body)


def test_with_nothing_published_a_receive_waits_then_returns_nothing(channels: Channels) -> None:
    async def body() -> None:
        channels.expect("r1")

        assert await channels.receive("r1", timeout_s=0.05) == []

    run(body)


def test_a_forgotten_request_receives_nothing_more(channels: Channels) -> None:
    async def body() -> None:
        address = channels.expect("r1")
        channels.forget("r1")
        channels.publish("r1", delta_event("late", 1), address)
        channels.flush()

        assert await channels.receive("r1", timeout_s=0.05) == []

    run(body)


def test_each_delivery_counts_and_sees_done_and_abort_marks(channels: Channels) -> None:
    first = channels.begin("r1")
    channels.request_abort("r1")
    channels.finish("r1", done_event("stop", {})).result(timeout=5)
    second = channels.begin("r1")

    assert (first.attempt, first.done, first.aborted) == (1, False, False)
    assert (second.attempt, second.done, second.aborted) == (2, True, True)


def test_a_finished_request_is_done_once_its_answer_is_readable_after_its_deltas(
    channels: Channels,
) -> None:
    async def body() -> None:
        address = channels.expect("r1")
        channels.publish("r1", delta_event("a", 1), address)
        channels.publish("r1", delta_event("b", 1), address)  # soon after: held, paced
        assert not channels.begin("r1").done
        await asyncio.wrap_future(channels.finish("r1", done_event("stop", {}), address))

        assert channels.begin("r1").done
        received = await receive_all_until_done(channels, "r1")
        assert "".join(e.get("text", "") for e in received) == "ab"
        assert [e["type"] for e in received][-1] == "done"

    run(body)


def test_a_fast_streams_deltas_reach_its_gateway_fewer_and_whole() -> None:
    url = (settings.REDIS_URL or "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/7"
    channels = RedisChannels(url)

    async def body() -> None:
        address = channels.expect("fast")
        for _ in range(200):
            channels.publish("fast", delta_event("t", 1), address)
        channels.publish("fast", done_event("length", {}), address)
        received = await receive_all_until_done(channels, "fast")
        deltas = [event for event in received if event["type"] == "delta"]

        assert "".join(event["text"] for event in deltas) == "t" * 200
        assert sum(event["num_tokens"] for event in deltas) == 200
        assert len(deltas) < 200

    try:
        run(body)
    finally:
        channels.close()
