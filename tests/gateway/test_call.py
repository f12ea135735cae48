"""A `Call`'s event stream, over in-process channels: a started request whose answer can
no longer come ends with a clear error instead of waiting out the request timeout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway import call as call_module
from gateway.auth import Principal
from gateway.call import Call
from gateway.errors import OpenAIError
from wire.channels import LocalChannels
from wire.local_gate import LocalGate
from wire.protocol import GenerationRequest, RequestKind, start_event

ALICE = Principal(1, "sk-alice", "acme", 1, 1.0, None, None)


def a_call(channels: LocalChannels) -> Call:
    request = GenerationRequest(
        request_id="r1",
        kind=RequestKind.COMPLETION,
        tenant="acme",
        tenant_id=1,
        api_key_id=1,
        model="parity-tiny",
        max_tokens=8,
        received_at=time.time(),
        prompt="hello",
    )
    call = Call(channels, LocalGate(), request, ALICE)
    channels.expect("r1")
    return call


async def drain(call: Call) -> list[Any]:
    return [event async for event in call.events()]


@pytest.fixture(autouse=True)
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(call_module, "LOST_AFTER_S", 0.2)
    monkeypatch.setattr(call_module, "LOST_UNSTARTED_AFTER_S", 0.4)
    monkeypatch.setattr(call_module, "POLL_S", 0.05)


class OutageChannels(LocalChannels):
    """In-process channels whose reader has seen the event store go away once since the
    request was submitted (as a Redis that restarted empty)."""

    def event_outages(self) -> int:
        return 1


def test_a_started_request_with_no_live_run_after_an_outage_ends_as_answer_lost() -> None:
    channels = OutageChannels()
    call = a_call(channels)
    channels.publish("r1", start_event(1, 3))  # then its done is lost, and no run is alive

    with pytest.raises(OpenAIError) as lost:
        asyncio.run(asyncio.wait_for(drain(call), 10))

    assert (lost.value.status, lost.value.code) == (502, "answer_lost")


def test_a_request_whose_every_event_was_lost_ends_as_answer_lost_and_is_aborted() -> None:
    # A short request's `start` and `done` both fell just before the event store restarted.
    channels = OutageChannels()
    call = a_call(channels)
    call._submitted = True  # as if handed to the pool: a copy may still wait in the broker

    with pytest.raises(OpenAIError) as lost:
        asyncio.run(asyncio.wait_for(drain(call), 10))

    assert (lost.value.status, lost.value.code) == (502, "answer_lost")
    assert channels.abort_requested("r1")  # a late delivery of it stops unrun


@pytest.mark.parametrize(
    ("channels", "why"),
    [
        (OutageChannels(), "its run is alive (a long prefill, say)"),
        (LocalChannels(), "no outage: its worker died and its copy waits for the next one"),
    ],
)
def test_a_quiet_request_keeps_waiting_when_its_answer_can_still_come(
    channels: LocalChannels, why: str
) -> None:
    call = a_call(channels)
    channels.publish("r1", start_event(1, 3))
    if isinstance(channels, OutageChannels):
        channels.claim_run("r1", "worker#1")

    async def body() -> int:
        keepalives = 0
        async for event in call.events():
            if event is not None:
                assert event["type"] == "start"  # then keep-alives only, no error
                continue
            keepalives += 1
            if keepalives >= 20:  # well past two checks
                break
        return keepalives

    assert asyncio.run(asyncio.wait_for(body(), 10)) == 20
