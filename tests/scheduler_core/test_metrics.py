from __future__ import annotations

import numpy as np
import pytest

from scheduler_core import metrics
from scheduler_core.sim.records import RequestRecord, RequestStatus


def make_record(
    tenant: str = "alice",
    arrival_s: float = 0.0,
    prompt_tokens: int = 10,
    output_tokens: int = 5,
    first_token_s: float | None = 1.0,
    finish_s: float | None = 2.0,
    admitted_s: float | None = 0.0,
    status: RequestStatus = RequestStatus.FINISHED,
    requested_output_tokens: int | None = None,
) -> RequestRecord:
    requested = output_tokens if requested_output_tokens is None else requested_output_tokens
    return RequestRecord(
        request_id=f"{tenant}-{arrival_s}",
        tenant=tenant,
        arrival_s=arrival_s,
        prompt_tokens=prompt_tokens,
        requested_output_tokens=requested,
        status=status,
        admitted_s=admitted_s,
        first_token_s=first_token_s,
        finish_s=finish_s,
        output_tokens=output_tokens,
    )


def test_service_is_spread_uniformly_over_the_service_interval() -> None:
    record = make_record(prompt_tokens=10, output_tokens=5, first_token_s=10.0, finish_s=20.0)
    served = metrics.service_in_intervals(
        [record], ["alice"], np.array([0.0, 15.0]), np.array([15.0, 30.0])
    )
    assert served.tolist() == [[10.0], [10.0]]  # cost 10 + 2 * 5 = 20, half in each


def test_an_instant_request_counts_as_a_point_at_its_finish() -> None:
    record = make_record(first_token_s=5.0, finish_s=5.0)
    served = metrics.service_in_intervals(
        [record], ["alice"], np.array([0.0, 5.0]), np.array([5.0, 10.0])
    )
    assert served.tolist() == [[0.0], [20.0]]


def test_the_papers_windows_start_after_warmup_at_twentieths_of_the_run() -> None:
    centers = metrics.paper_window_centers(600)
    assert len(centers) == 19
    assert centers[0] == pytest.approx(30 + 28.5)
    assert centers[-1] == pytest.approx(30 + 28.5 * 19)


def test_service_difference_counts_an_unserved_tenant_up_to_its_demand() -> None:
    hog = make_record(
        "alice", prompt_tokens=6000, output_tokens=0, first_token_s=0.0, finish_s=600.0
    )
    starved = [
        make_record(
            "bob",
            arrival_s=7.25 + 10 * k,  # never on a window edge: six per window
            prompt_tokens=50,
            output_tokens=0,
            first_token_s=None,
            finish_s=None,
            status=RequestStatus.REJECTED,
        )
        for k in range(60)
    ]
    stats = metrics.service_difference([hog, *starved], ["alice", "bob"], 600)
    # alice serves at 10/s; bob asks 5/s and gets nothing: min(10 - 0, |5 - 0|) = 5
    assert stats.max_diff == pytest.approx(5.0)
    assert stats.avg_diff == pytest.approx(5.0)


def test_equal_service_has_no_difference() -> None:
    records = [
        make_record(t, prompt_tokens=600, output_tokens=0, first_token_s=0.0, finish_s=600.0)
        for t in ("alice", "bob")
    ]
    assert metrics.service_difference(records, ["alice", "bob"], 600).max_diff == 0.0


def test_weights_normalise_the_service_difference() -> None:
    records = [
        make_record("alice", prompt_tokens=600, output_tokens=0, first_token_s=0.0, finish_s=600.0),
        make_record("bob", prompt_tokens=1200, output_tokens=0, first_token_s=0.0, finish_s=600.0),
    ]
    plain = metrics.service_difference(records, ["alice", "bob"], 600)
    weighted = metrics.service_difference(
        records, ["alice", "bob"], 600, weights={"alice": 1.0, "bob": 2.0}
    )
    assert plain.max_diff > 0
    assert weighted.max_diff == 0.0


def test_accumulated_difference_is_the_spread_of_service_so_far() -> None:
    records = [
        make_record("alice", prompt_tokens=100, output_tokens=0, first_token_s=0.0, finish_s=10.0),
        make_record("bob", prompt_tokens=100, output_tokens=0, first_token_s=10.0, finish_s=20.0),
    ]
    spread = metrics.accumulated_service_difference(
        records, ["alice", "bob"], np.array([10.0, 20.0])
    )
    assert spread.tolist() == [100.0, 0.0]


def test_jains_index_is_one_when_equal_and_one_over_n_when_one_takes_all() -> None:
    assert metrics.jains_index([3.0, 3.0, 3.0]) == pytest.approx(1.0)
    assert metrics.jains_index([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)


def test_jains_index_over_backlogged_tenants_uses_weight_normalised_service() -> None:
    records = [
        make_record("alice", prompt_tokens=600, output_tokens=0, first_token_s=0.0, finish_s=600.0),
        make_record("bob", prompt_tokens=1200, output_tokens=0, first_token_s=0.0, finish_s=600.0),
        # a request of each waits from 0 to 600: both are backlogged throughout
        make_record(
            "alice",
            first_token_s=None,
            finish_s=None,
            admitted_s=None,
            status=RequestStatus.WAITING,
        ),
        make_record(
            "bob", first_token_s=None, finish_s=None, admitted_s=None, status=RequestStatus.WAITING
        ),
    ]
    centers = np.array([300.0])
    tenants = ["alice", "bob"]
    assert metrics.backlogged_jains_index(records, tenants, centers) == pytest.approx(0.9)
    equalised = metrics.backlogged_jains_index(records, tenants, centers, {"bob": 2.0})
    assert equalised == pytest.approx(1.0)


def test_throughput_counts_prompt_and_output_of_finished_requests_over_the_run() -> None:
    records = [
        make_record(prompt_tokens=10, output_tokens=5),
        make_record(prompt_tokens=10, output_tokens=5),
        make_record(status=RequestStatus.REJECTED, output_tokens=0, finish_s=None),
    ]
    assert metrics.throughput_tokens_per_s(records, 10.0) == 3.0
    assert metrics.num_rejected(records) == 1


def test_latency_percentiles_per_tenant() -> None:
    records = [
        make_record("alice", arrival_s=0.0, first_token_s=float(k), finish_s=float(k + 1))
        for k in range(1, 101)
    ] + [make_record("bob", arrival_s=0.0, first_token_s=1000.0, finish_s=1001.0)]
    assert metrics.percentile(metrics.ttfts(records, "alice"), 50) == pytest.approx(50.5)
    assert metrics.percentile(metrics.latencies(records, "bob"), 99) == pytest.approx(1001.0)
    assert np.isnan(metrics.percentile([], 50))
