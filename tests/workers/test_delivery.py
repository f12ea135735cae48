"""A delivery's claim on its request's run, and the watch on running requests' seats."""

from __future__ import annotations

import threading
import time

from wire.channels import LocalChannels
from wire.protocol import done_event
from workers import delivery
from workers.delivery import SeatWatch, claim, restart_decision


def test_a_second_delivery_waits_for_the_first_and_then_runs_it(monkeypatch) -> None:
    monkeypatch.setattr(delivery, "CLAIM_POLL_S", 0.01)
    channels = LocalChannels()
    assert claim(channels, "r1", "a#1")
    outcome: list[bool] = []
    second = threading.Thread(target=lambda: outcome.append(claim(channels, "r1", "b#2")))
    second.start()
    time.sleep(0.05)
    assert outcome == []  # still waiting: the first delivery runs it
    channels.release_run("r1", "a#1")  # its worker died before finishing; the claim is gone
    second.join(timeout=5)
    assert outcome == [True]


def test_a_delivery_whose_request_the_first_finished_has_nothing_to_do(monkeypatch) -> None:
    monkeypatch.setattr(delivery, "CLAIM_POLL_S", 0.01)
    channels = LocalChannels()
    claim(channels, "r1", "a#1")
    outcome: list[bool] = []
    second = threading.Thread(target=lambda: outcome.append(claim(channels, "r1", "b#2")))
    second.start()
    channels.finish("r1", done_event("stop", {})).result(timeout=5)
    channels.release_run("r1", "a#1")
    second.join(timeout=5)
    assert outcome == [False]


def test_a_restarted_stream_with_no_word_from_its_gateway_gives_up(monkeypatch) -> None:
    monkeypatch.setattr(delivery, "DECISION_WAIT_S", 0.05)
    assert restart_decision(LocalChannels(), "r1") is None


def test_a_seat_missing_for_a_moment_is_not_an_orphan_but_one_missing_for_long_is() -> None:
    watch = SeatWatch(grace_s=10)
    assert watch.orphans({"r1", "r2"}, now=100.0) == set()
    assert watch.orphans({"r1"}, now=105.0) == set()  # r2's seat came back
    assert watch.orphans({"r1", "r2"}, now=110.0) == {"r1"}  # r2 starts over
    assert watch.orphans({"r2"}, now=121.0) == {"r2"}
