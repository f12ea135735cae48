from __future__ import annotations

import pytest

from scheduler_core.metrics import num_rejected
from scheduler_core.policies import FCFSPolicy, RPMPolicy, VTCPolicy
from scheduler_core.sim import RequestStatus, ReservePolicy, get_profile, simulate
from scheduler_core.sim.records import RequestRecord

from .factories import make_job, make_profile


def timeline(records: list[RequestRecord]) -> dict[str, tuple[float | None, ...]]:
    return {r.request_id: (r.admitted_s, r.first_token_s, r.finish_s) for r in records}


def test_a_lone_request_prefills_in_one_step_then_decodes_one_token_per_step() -> None:
    job = make_job("a1", prompt_tokens=8, max_tokens=3)
    result = simulate([job], make_profile(), FCFSPolicy())
    assert timeline(result.records) == {"a1": (0.0, 1.0, 3.0)}
    assert result.records[0].output_tokens == 3
    assert result.makespan_s == 3.0
    assert result.num_steps == 3


def test_an_idle_engine_jumps_to_the_next_arrival() -> None:
    jobs = [make_job("a1", max_tokens=1), make_job("a2", arrival_s=5.0, max_tokens=2)]
    result = simulate(jobs, make_profile(), FCFSPolicy())
    assert timeline(result.records) == {"a1": (0.0, 1.0, 1.0), "a2": (5.0, 6.0, 7.0)}


def test_a_long_prompt_is_prefilled_in_chunks_of_the_token_budget() -> None:
    job = make_job("a1", prompt_tokens=100, max_tokens=2)
    result = simulate([job], make_profile(max_num_batched_tokens=64), FCFSPolicy())
    assert timeline(result.records) == {"a1": (0.0, 2.0, 3.0)}


def test_refilling_stops_at_a_head_that_does_not_fit() -> None:
    jobs = [
        make_job("a1", tenant="alice", prompt_tokens=16, max_tokens=64, output_tokens=4),
        make_job("b1", tenant="bob", prompt_tokens=32, max_tokens=64),  # 6 of 10 blocks
        make_job("c1", tenant="carol", prompt_tokens=8, max_tokens=8),  # 1 block: fits, waits
    ]
    result = simulate(jobs, make_profile(), FCFSPolicy())
    assert timeline(result.records)["a1"] == (0.0, 1.0, 4.0)
    assert result.records[1].admitted_s == 4.0
    assert result.records[2].admitted_s == 4.0


def test_the_running_batch_is_capped_at_max_num_seqs() -> None:
    jobs = [make_job(f"r{i}", prompt_tokens=4, max_tokens=2) for i in range(5)]
    result = simulate(jobs, make_profile(max_num_seqs=4), FCFSPolicy())
    assert [r.admitted_s for r in result.records] == [0.0, 0.0, 0.0, 0.0, 2.0]


def test_step_time_follows_the_profiles_linear_model() -> None:
    profile = make_profile(
        step_base_s=0.5,
        step_per_prefill_token_s=0.01,
        step_per_seq_s=0.1,
        step_per_kv_token_s=0.001,
    )
    result = simulate([make_job("a1", prompt_tokens=10, max_tokens=2)], profile, FCFSPolicy())
    record = result.records[0]
    # step 1: 0.5 + 10 * 0.01 + 1 * 0.1 + 10 * 0.001; step 2: 0.5 + 0.1 + 11 * 0.001
    assert record.first_token_s == pytest.approx(0.71)
    assert record.finish_s == pytest.approx(0.71 + 0.611)


def test_on_demand_reserve_preempts_the_latest_request_and_recomputes_it() -> None:
    profile = make_profile(num_kv_tokens=64, reserve=ReservePolicy.ON_DEMAND)
    jobs = [
        make_job("a1", tenant="alice", prompt_tokens=16, max_tokens=40),
        make_job("b1", tenant="bob", prompt_tokens=16, max_tokens=40),
    ]
    policy = VTCPolicy()
    result = simulate(jobs, profile, policy)
    assert result.num_preemptions >= 1
    assert result.records[1].num_preemptions >= 1
    assert all(r.output_tokens == 40 for r in result.records)
    assert policy.snapshot()["bob"]["input_tokens"] == 16  # recompute is not billed
    assert policy.snapshot()["bob"]["output_tokens"] == 40


def test_projected_peak_admits_what_worst_case_reservation_cannot() -> None:
    jobs = [
        make_job("long", prompt_tokens=16, max_tokens=96),  # 7 of 10 blocks worst-case
        make_job("short1", prompt_tokens=16, max_tokens=16),  # 2 blocks
        make_job("short2", prompt_tokens=16, max_tokens=16),  # 2 more: over, worst-case
    ]
    worst = simulate(jobs, make_profile(), FCFSPolicy())
    projected = simulate(jobs, make_profile(reserve=ReservePolicy.PROJECTED), FCFSPolicy())
    assert [r.admitted_s for r in worst.records] == [0.0, 0.0, 16.0]
    # The shorts finish long before the long one peaks: 16 + 96 <= 160 - 3 blocks of slack.
    assert [r.admitted_s for r in projected.records] == [0.0, 0.0, 0.0]
    assert projected.num_preemptions == 0


def test_projected_peak_refuses_a_batch_that_would_overflow_later() -> None:
    jobs = [make_job(f"r{i}", prompt_tokens=16, max_tokens=48) for i in range(3)]
    projected = simulate(jobs, make_profile(reserve=ReservePolicy.PROJECTED), FCFSPolicy())
    assert [r.admitted_s for r in projected.records] == [0.0, 0.0, 48.0]
    assert projected.num_preemptions == 0


def test_rejected_requests_are_recorded_and_never_run() -> None:
    jobs = [make_job(f"r{i}", arrival_s=float(i), max_tokens=1) for i in range(3)]
    result = simulate(jobs, make_profile(), RPMPolicy(limit=2))
    assert [r.status for r in result.records] == [
        RequestStatus.FINISHED,
        RequestStatus.FINISHED,
        RequestStatus.REJECTED,
    ]
    assert result.records[2].admitted_s is None
    assert num_rejected(result.records) == 1


def test_every_accepted_request_is_finished_exactly_once() -> None:
    jobs = [make_job(f"r{i}", tenant=f"t{i % 3}", arrival_s=i / 3) for i in range(30)]
    policy = VTCPolicy()
    simulate(jobs, make_profile(), policy)
    snapshot = policy.snapshot()
    assert sum(s["num_finished"] for s in snapshot.values()) == 30
    assert all(s["num_admitted"] == s["num_finished"] for s in snapshot.values())


def test_runs_are_deterministic() -> None:
    jobs = [make_job(f"r{i}", tenant=f"t{i % 4}", arrival_s=i / 7) for i in range(40)]
    first = simulate(jobs, make_profile(), VTCPolicy())
    second = simulate(jobs, make_profile(), VTCPolicy())
    assert timeline(first.records) == timeline(second.records)


def test_a_request_larger_than_the_pool_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="needs more KV"):
        simulate([make_job(prompt_tokens=150, max_tokens=20)], make_profile(), FCFSPolicy())


def test_duplicate_request_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        simulate([make_job("x"), make_job("x")], make_profile(), FCFSPolicy())


def test_usage_is_billed_to_the_policy_in_full() -> None:
    jobs = [make_job(f"r{i}", tenant="alice", prompt_tokens=20, max_tokens=5) for i in range(3)]
    policy = VTCPolicy()
    simulate(jobs, make_profile(), policy)
    snapshot = policy.snapshot()["alice"]
    assert (snapshot["input_tokens"], snapshot["output_tokens"]) == (60, 15)
    assert snapshot["counter"] == 60 + 2 * 15
    assert snapshot["kv_block_steps"] == 3 * 2 * 5  # 2 blocks held for 5 steps each


def test_a_busy_engine_admits_only_every_admit_interval_steps() -> None:
    jobs = [
        make_job("a1", prompt_tokens=4, max_tokens=10),
        make_job("b1", arrival_s=0.5, prompt_tokens=4, max_tokens=2),
    ]
    result = simulate(jobs, make_profile(admit_interval_steps=3), FCFSPolicy())
    assert timeline(result.records)["b1"] == (3.0, 4.0, 5.0)


def test_profiles_are_found_by_name_and_validated() -> None:
    assert get_profile("a10g-llama2-7b").num_kv_tokens == 10_000
    assert get_profile("h100-llama3-8b").reserve is ReservePolicy.ON_DEMAND
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("tpu")
    with pytest.raises(ValueError, match="max_num_seqs"):
        make_profile(max_num_seqs=100, max_num_batched_tokens=50)


def test_the_h100_profile_admits_a_burst_as_fast_as_its_token_budget_allows() -> None:
    jobs = [
        make_job(f"r{i}", tenant=f"t{i % 3}", prompt_tokens=500, max_tokens=200) for i in range(30)
    ]
    result = simulate(jobs, get_profile("h100-llama3-8b"), VTCPolicy())
    admitted = sorted(r.admitted_s or 0.0 for r in result.records)
    # 8,192 prompt tokens per step: 17 prompts of 500 start at once, the rest as budget frees.
    assert admitted.count(0.0) == 17
    assert admitted[-1] < 0.5
    assert result.num_preemptions == 0
    assert result.makespan_s < 5.0
