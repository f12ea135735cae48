"""Pacing a request's token events: its first delta leaves at once, the deltas that follow
within the interval leave as one, and nothing else ever waits."""

from __future__ import annotations

import pytest

from wire.channels import Event
from wire.pacing import DeltaPacer, Outgoing
from wire.protocol import delta_event, done_event, error_event, start_event

INTERVAL = 0.02


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def paced() -> tuple[DeltaPacer, Clock]:
    clock = Clock()
    return DeltaPacer(INTERVAL, clock), clock


def to(request_id: str, *events: Event) -> list[Outgoing]:
    return [(request_id, f"inbox-of-{request_id}", event) for event in events]


def test_the_first_delta_of_a_request_leaves_at_once() -> None:
    pacer, _ = paced()

    assert pacer.admit(to("r1", start_event(1, 5), delta_event("Hi", 1))) == to(
        "r1", start_event(1, 5), delta_event("Hi", 1)
    )
    assert pacer.num_held == 0


def test_deltas_within_the_interval_leave_as_one_when_it_is_up() -> None:
    pacer, clock = paced()
    pacer.admit(to("r1", delta_event("a", 1)))
    clock.now += 0.005
    held = pacer.admit(to("r1", delta_event("b", 1), delta_event("c", 2)))

    assert held == []
    assert pacer.num_held == 2
    assert pacer.wait_s() == pytest.approx(INTERVAL - 0.005)
    clock.now += pacer.wait_s() or 0
    assert pacer.due() == to("r1", delta_event("bc", 3))
    assert pacer.num_held == 0
    assert pacer.wait_s() is None


def test_done_never_waits_and_follows_the_deltas_held_before_it() -> None:
    pacer, clock = paced()
    pacer.admit(to("r1", delta_event("a", 1)))
    clock.now += 0.001
    pacer.admit(to("r1", delta_event("b", 1)))

    assert pacer.admit(to("r1", done_event("stop", {}))) == to(
        "r1", delta_event("b", 1), done_event("stop", {})
    )
    assert pacer.num_held == 0


def test_an_error_ends_the_pacing_of_its_request() -> None:
    pacer, clock = paced()
    pacer.admit(to("r1", delta_event("a", 1)))
    pacer.admit(to("r1", error_event(500, "engine", "boom")))

    assert pacer.admit(to("r1", delta_event("again", 1))) == to("r1", delta_event("again", 1))


def test_one_requests_pace_never_holds_another_requests_events() -> None:
    pacer, clock = paced()
    pacer.admit(to("r1", delta_event("a", 1)))
    clock.now += 0.001

    assert pacer.admit(to("r1", delta_event("b", 1)) + to("r2", delta_event("x", 1))) == to(
        "r2", delta_event("x", 1)
    )


def test_after_a_quiet_interval_a_delta_leaves_at_once() -> None:
    pacer, clock = paced()
    pacer.admit(to("r1", delta_event("a", 1)))
    clock.now += INTERVAL

    assert pacer.admit(to("r1", delta_event("b", 1))) == to("r1", delta_event("b", 1))


def test_at_shutdown_every_held_delta_is_released() -> None:
    pacer, clock = paced()
    pacer.admit(to("r1", delta_event("a", 1)) + to("r2", delta_event("x", 1)))
    pacer.admit(to("r1", delta_event("b", 1)) + to("r2", delta_event("y", 1)))

    assert sorted(pacer.release_all()) == sorted(
        to("r1", delta_event("b", 1)) + to("r2", delta_event("y", 1))
    )
    assert pacer.num_held == 0
