from __future__ import annotations

import pytest

from scheduler_core.fair_queue import FairQueue
from scheduler_core.policies import FCFSPolicy, RPMPolicy, VTCPolicy
from scheduler_core.policy import Admission

from .factories import make_job


def test_an_empty_queue_is_falsy_and_peeks_none() -> None:
    queue = FairQueue(VTCPolicy())
    assert not queue
    assert len(queue) == 0
    assert queue.peek() is None
    with pytest.raises(IndexError):
        queue.pop()


def test_pop_returns_exactly_the_object_peek_returned() -> None:
    queue = FairQueue(VTCPolicy())
    first = make_job("a1", tenant="alice")
    queue.push(first, 0.0)
    queue.push(make_job("b1", tenant="bob"), 0.0)
    peeked = queue.peek()
    assert peeked is first
    assert queue.pop() is peeked
    assert len(queue) == 1


def test_length_counts_every_waiting_request_across_tenants() -> None:
    queue = FairQueue(FCFSPolicy())
    for i, tenant in enumerate(["alice", "bob", "alice", "carol"]):
        queue.push(make_job(f"r{i}", tenant=tenant, arrival_s=i), float(i))
    assert len(queue) == 4
    assert queue.num_waiting("alice") == 2
    assert queue.waiting_tenants() == ["alice", "bob", "carol"]


def test_requests_of_one_tenant_leave_in_fifo_order() -> None:
    queue = FairQueue(VTCPolicy())
    for i in range(3):
        queue.push(make_job(f"a{i}", tenant="alice", arrival_s=i), float(i))
    assert [queue.pop().request_id for _ in range(3)] == ["a0", "a1", "a2"]


def test_a_preempted_request_goes_back_to_the_head_of_its_tenant() -> None:
    queue = FairQueue(VTCPolicy())
    queue.push(make_job("a1", tenant="alice"), 0.0)
    queue.push(make_job("a2", tenant="alice"), 0.0)
    running = queue.pop()
    queue.prepend(running)
    assert [job.request_id for job in queue] == ["a1", "a2"]


def test_prepending_does_not_count_as_an_arrival() -> None:
    policy = RPMPolicy(limit=1)
    queue = FairQueue(policy)
    job = make_job("a1")
    queue.push(job, 0.0)
    queue.prepend(queue.pop())
    assert policy.snapshot()["alice"]["num_arrived"] == 1
    assert len(queue) == 1


def test_prepend_all_restores_the_given_order() -> None:
    queue = FairQueue(VTCPolicy())
    jobs = [make_job(f"a{i}", tenant="alice") for i in range(3)]
    for job in jobs:
        queue.push(job, 0.0)
    skipped = [queue.pop(), queue.pop()]
    queue.prepend_all(skipped)
    assert [job.request_id for job in queue] == ["a0", "a1", "a2"]


def test_removing_unknown_ids_is_ignored() -> None:
    queue = FairQueue(VTCPolicy())
    queue.push(make_job("a1"), 0.0)
    assert queue.remove("nope") is None
    assert queue.remove_all(["nope", "a1", "also-nope"])[0].request_id == "a1"
    assert len(queue) == 0
    assert queue.peek() is None


def test_removing_a_head_lets_the_next_request_of_that_tenant_lead() -> None:
    queue = FairQueue(FCFSPolicy())
    queue.push(make_job("a1", tenant="alice", arrival_s=0.0), 0.0)
    queue.push(make_job("b1", tenant="bob", arrival_s=1.0), 1.0)
    queue.push(make_job("a2", tenant="alice", arrival_s=2.0), 2.0)
    queue.remove("a1")
    assert [job.request_id for job in queue] == ["b1", "a2"]


def test_a_rejected_request_is_not_queued() -> None:
    queue = FairQueue(RPMPolicy(limit=1))
    assert queue.push(make_job("a1"), 0.0) is Admission.ACCEPTED
    assert queue.push(make_job("a2"), 1.0) is Admission.REJECTED
    assert len(queue) == 1
    assert "a2" not in queue


def test_pushing_a_request_twice_is_refused() -> None:
    queue = FairQueue(VTCPolicy())
    job = make_job("a1")
    queue.push(job, 0.0)
    with pytest.raises(ValueError, match="already waiting"):
        queue.push(job, 0.0)


def test_iteration_follows_fcfs_across_tenants() -> None:
    queue = FairQueue(FCFSPolicy())
    arrivals = [("a1", "alice", 0.0), ("b1", "bob", 1.0), ("a2", "alice", 2.0), ("b2", "bob", 3.0)]
    for request_id, tenant, t in arrivals:
        queue.push(make_job(request_id, tenant=tenant, arrival_s=t), t)
    assert [job.request_id for job in queue] == ["a1", "b1", "a2", "b2"]


def test_iteration_under_vtc_serves_the_least_counter_tenant_first() -> None:
    policy = VTCPolicy()
    queue = FairQueue(policy)
    queue.push(make_job("a1", tenant="alice"), 0.0)
    queue.push(make_job("b1", tenant="bob"), 0.0)
    policy.charge(make_job("a0", tenant="alice", prompt_tokens=5), 5, 0)
    assert [job.request_id for job in queue] == ["b1", "a1"]


def test_a_preempted_request_wins_a_counter_tie_against_later_arrivals() -> None:
    queue = FairQueue(VTCPolicy())
    queue.push(make_job("a1", tenant="alice"), 0.0)
    queue.push(make_job("b1", tenant="bob"), 0.0)
    preempted = queue.pop()  # a1: both counters still 0, alice entered first
    queue.prepend(preempted)
    assert queue.peek() is preempted
