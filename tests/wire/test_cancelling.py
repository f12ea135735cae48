"""A gateway's waits end when their client hangs up, even as their answer arrives.

A hang-up cancels the request's task wherever it waits: for its seat at the gate, or for
its next events. Python 3.11's `asyncio.wait_for` swallows a cancel that lands in the
loop turns between the awaited thing completing and the waiter resuming: the request then
went on for a client that was gone, streaming into the void and never aborted (seen in
CI: a hang-up not noticed for 30 s while tokens kept arriving). Each case below cancels
its waiter at every loop turn from the answer's arrival until the waiter would resume.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from django.conf import settings

from tests.wire.test_gate import light
from wire.channels import LocalChannels
from wire.local_gate import LocalGate
from wire.redis_inbox import Inbox

# Enough loop turns to span the answer's way to the waiter (a callback, a shield, a task).
TURNS = range(8)
Answer = Callable[[], object]
Setup = Callable[[], Awaitable[tuple[Awaitable[object], Answer]]]


async def ends_cancelled(setup: Setup, turns: int) -> bool:
    """Whether a waiter, cancelled `turns` loop turns after its answer arrived, ends
    cancelled (rather than going on with the answer). One that resumed before the cancel
    had nothing left to cancel."""
    wait, answer = await setup()
    waiter = asyncio.ensure_future(wait)
    for _ in range(3):  # parked on its answer
        await asyncio.sleep(0)
    assert not waiter.done()
    answer()
    for _ in range(turns):
        await asyncio.sleep(0)
    if waiter.done():
        return True
    waiter.cancel()
    try:
        await waiter
    except asyncio.CancelledError:
        return True
    return False


async def events_in_process() -> tuple[Awaitable[object], Answer]:
    channels = LocalChannels()
    channels.expect("light-1")
    return channels.receive("light-1", 10), lambda: channels.publish("light-1", {"type": "x"})


async def events_from_redis() -> tuple[Awaitable[object], Answer]:
    client = aioredis.Redis.from_url(settings.REDIS_URL or "redis://127.0.0.1:6379/0")
    inbox = Inbox(client, "parity:test:cancelling:")
    inbox.expect("light-1")
    # As the inbox's reader hands over what one read brought.
    return inbox.receive("light-1", 10), lambda: inbox._deliver("light-1", json.dumps({}))


async def a_seat() -> tuple[Awaitable[object], Answer]:
    gate = LocalGate()
    gate.heartbeat("worker-1", 1, {})
    await gate.enter(light(1))
    await gate.enter(light(2))  # queued behind light-1
    return gate.wait_seat("light-2", 10), lambda: asyncio.ensure_future(gate.leave("light-1"))


@pytest.mark.parametrize("setup", [events_in_process, events_from_redis, a_seat])
def test_a_waiter_cancelled_as_its_answer_arrives_ends_cancelled(setup: Setup) -> None:
    async def every_turn() -> list[int]:
        return [turns for turns in TURNS if not await ends_cancelled(setup, turns)]

    assert asyncio.run(every_turn()) == [], "cancels swallowed at these loop turns"
