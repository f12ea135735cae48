"""The fair waiting queue keeps the contract vLLM's schedule loop relies on."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import pytest
from vllm.v1.request import RequestStatus

from tests.workers.vllm_factories import add_all, make_request, make_requests, make_scheduler, step


@pytest.fixture
def scheduler(tiny_model_dir: Path):
    return make_scheduler(tiny_model_dir)


def test_len_stays_exact_through_add_pop_prepend_and_remove(scheduler) -> None:
    queue = scheduler.waiting
    acme, globex = make_requests(3, tenant="acme"), make_requests(2, tenant="globex")
    add_all(scheduler, acme + globex)
    assert len(queue) == 5 and bool(queue)

    popped = queue.pop_request()
    assert len(queue) == 4
    queue.prepend_request(popped)
    assert len(queue) == 5

    queue.remove_requests([acme[1], globex[0]])
    assert len(queue) == 3
    assert {r.request_id for r in queue} == {"acme-0", "acme-2", "globex-1"}
    queue.remove_requests([r for r in queue])
    assert len(queue) == 0 and not queue


def test_removing_requests_it_does_not_hold_is_harmless(scheduler) -> None:
    queue = scheduler.waiting
    held = make_request("held")
    scheduler.add_request(held)

    queue.remove_request(make_request("stranger"))
    queue.remove_requests([make_request("other"), make_request("another")])

    assert len(queue) == 1
    assert queue.peek_request() is held


def test_pop_returns_the_very_object_peek_returned(scheduler) -> None:
    add_all(scheduler, make_requests(2, tenant="acme") + make_requests(2, tenant="globex"))
    queue = scheduler.waiting
    while queue:
        head = queue.peek_request()
        assert queue.pop_request() is head


def test_an_empty_queue_raises_index_error_on_peek_and_pop(scheduler) -> None:
    with pytest.raises(IndexError):
        scheduler.waiting.peek_request()
    with pytest.raises(IndexError):
        scheduler.waiting.pop_request()


def test_skipped_requests_handed_back_as_vllm_does_come_out_in_their_original_order(
    scheduler,
) -> None:
    queue = scheduler.waiting
    add_all(scheduler, make_requests(4, tenant="acme"))
    # vLLM's schedule loop collects skipped requests with appendleft, then prepends them.
    skipped: deque = deque()
    for _ in range(3):
        skipped.appendleft(queue.pop_request())
    queue.prepend_requests(skipped)

    assert [r.request_id for r in queue] == ["acme-0", "acme-1", "acme-2", "acme-3"]
    assert len(queue) == 4


def test_prepending_is_not_new_demand(scheduler) -> None:
    add_all(scheduler, make_requests(2, tenant="acme"))
    queue = scheduler.waiting
    queue.prepend_request(queue.pop_request())
    assert scheduler.fair_policy.snapshot()["acme"]["num_arrived"] == 2


def test_the_scheduler_counts_every_unfinished_request_through_preemption_and_aborts(
    tiny_model_dir: Path,
) -> None:
    scheduler = make_scheduler(tiny_model_dir, num_blocks=12, max_num_seqs=4)
    requests = make_requests(6, tenant="acme", max_tokens=64) + make_requests(
        6, tenant="globex", max_tokens=64
    )
    add_all(scheduler, requests)
    num_preempted = 0
    for i in range(400):
        if i == 20:
            scheduler.finish_requests(["acme-5", "globex-0"], RequestStatus.FINISHED_ABORTED)
        output = step(scheduler)
        num_preempted += len(output.preempted_req_ids)
        num_live = sum(not r.is_finished() for r in requests)
        assert scheduler.get_num_unfinished_requests() == num_live
        assert len(scheduler.waiting) + len(scheduler.running) == num_live
    assert num_preempted >= 1
    assert not scheduler.has_requests()
