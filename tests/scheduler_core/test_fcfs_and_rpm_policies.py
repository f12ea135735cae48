from __future__ import annotations

import pytest

from scheduler_core.fair_queue import FairQueue
from scheduler_core.policies import FCFSPolicy, RPMPolicy
from scheduler_core.policy import Admission

from .factories import make_job


def test_fcfs_serves_by_arrival_time_whatever_the_tenant() -> None:
    queue = FairQueue(FCFSPolicy())
    queue.push(make_job("a1", tenant="alice", arrival_s=0.0), 0.0)
    queue.push(make_job("a2", tenant="alice", arrival_s=1.0), 1.0)
    queue.push(make_job("b1", tenant="bob", arrival_s=0.5), 0.5)
    assert [queue.pop().request_id for _ in range(3)] == ["a1", "b1", "a2"]


def test_fcfs_breaks_equal_arrival_times_by_push_order() -> None:
    queue = FairQueue(FCFSPolicy())
    queue.push(make_job("z1", tenant="zed", arrival_s=1.0), 1.0)
    queue.push(make_job("a1", tenant="amy", arrival_s=1.0), 1.0)
    assert queue.pop().request_id == "z1"


def test_rpm_rejects_the_request_over_the_limit_within_sixty_seconds() -> None:
    policy = RPMPolicy(limit=2)
    decisions = [policy.on_arrival(make_job(arrival_s=t), t) for t in (0.0, 10.0, 59.0)]
    assert decisions == [Admission.ACCEPTED, Admission.ACCEPTED, Admission.REJECTED]
    assert policy.snapshot()["alice"]["num_rejected"] == 1


def test_rpm_accepts_again_once_the_window_slides_past() -> None:
    policy = RPMPolicy(limit=1)
    assert policy.on_arrival(make_job(), 0.0) is Admission.ACCEPTED
    assert policy.on_arrival(make_job(), 59.9) is Admission.REJECTED
    assert policy.on_arrival(make_job(), 60.0) is Admission.ACCEPTED


def test_rpm_counts_each_tenant_separately() -> None:
    policy = RPMPolicy(limit=1)
    assert policy.on_arrival(make_job(tenant="alice"), 0.0) is Admission.ACCEPTED
    assert policy.on_arrival(make_job(tenant="bob"), 0.0) is Admission.ACCEPTED


def test_rpm_needs_a_positive_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        RPMPolicy(limit=0)
