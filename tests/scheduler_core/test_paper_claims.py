"""The VTC paper's headline results, reproduced in the simulator (a10g-llama2-7b)."""

from __future__ import annotations

import pytest

from scheduler_core.experiment import Cell, run_cell
from scheduler_core.job import Job
from scheduler_core.metrics import num_rejected, percentile, throughput_tokens_per_s, ttfts
from scheduler_core.registry import make_policy
from scheduler_core.sim import get_profile, simulate
from scheduler_core.sim.workloads import make_workload

A10G = get_profile("a10g-llama2-7b")


def cell(workload: str, policy: str) -> Cell:
    return run_cell(make_workload(workload), policy, A10G)


@pytest.fixture(scope="module")
def arena() -> dict[str, Cell]:
    return {policy: cell("arena", policy) for policy in ("fcfs", "vtc")}


def test_the_arena_trace_runs_near_the_papers_777_tokens_per_second(arena: dict[str, Cell]) -> None:
    assert 770 <= arena["fcfs"].summary.throughput_tok_s <= 800


def test_vtc_cuts_the_arena_max_service_difference_to_at_most_sixty_percent_of_fcfs(
    arena: dict[str, Cell],
) -> None:
    assert arena["vtc"].summary.max_diff <= 0.6 * arena["fcfs"].summary.max_diff


def test_vtc_keeps_arena_throughput_within_two_percent_of_fcfs(arena: dict[str, Cell]) -> None:
    fcfs, vtc = arena["fcfs"].summary.throughput_tok_s, arena["vtc"].summary.throughput_tok_s
    assert abs(vtc - fcfs) <= 0.02 * fcfs


def test_weighted_vtc_splits_service_one_two_three_four_while_all_are_backlogged() -> None:
    workload = make_workload("overload-weighted")
    policy = make_policy("vtc", weights=workload.weights)
    log = simulate(workload.jobs, A10G, policy, record_service=True).service_log
    together = [s for s in log if s.backlogged == frozenset(workload.tenants)]
    first, last = together[0], together[-1]
    assert last.time_s - first.time_s > 300

    def served(tenant: str) -> float:
        before = first.input_tokens.get(tenant, 0) + 2 * first.output_tokens.get(tenant, 0)
        return last.input_tokens[tenant] + 2 * last.output_tokens[tenant] - before

    per_weight = [served(t) / workload.weights[t] for t in workload.tenants]
    mean = sum(per_weight) / len(per_weight)
    assert all(abs(share / mean - 1) <= 0.02 for share in per_weight)


def test_vtc_beats_lcf_on_max_difference_when_the_distribution_shifts() -> None:
    assert cell("dist_shift", "vtc").summary.max_diff < cell("dist_shift", "lcf").summary.max_diff


def test_rpm_rejects_requests_and_loses_throughput_while_capacity_is_spare() -> None:
    # One tenant at 60 req/min of 256/256 tokens: ~512 tokens/s, well under capacity.
    jobs = [Job(f"r{i}", "solo", float(i), 256, 256) for i in range(300)]
    fcfs = simulate(jobs, A10G, make_policy("fcfs"))
    rpm = simulate(jobs, A10G, make_policy("rpm20"))
    assert num_rejected(fcfs.records) == 0
    assert percentile(ttfts(fcfs.records), 99) < 1.0  # nobody queues: capacity to spare
    assert num_rejected(rpm.records) > 0
    fcfs_rate = throughput_tokens_per_s(fcfs.records, fcfs.makespan_s)
    assert throughput_tokens_per_s(rpm.records, rpm.makespan_s) < 0.5 * fcfs_rate
