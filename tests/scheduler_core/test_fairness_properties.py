"""Properties of VTC and the simulator over random workloads (hypothesis)."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler_core.job import Job
from scheduler_core.policies import FCFSPolicy, VTCPolicy
from scheduler_core.policy import FairPolicy
from scheduler_core.registry import make_policy
from scheduler_core.sim import SimResult, simulate

from .factories import make_job, make_profile

W_IN, W_OUT = 1.0, 2.0
PROFILE = make_profile(
    num_kv_tokens=512,
    max_num_seqs=16,
    max_num_batched_tokens=256,
    step_base_s=0.05,
    step_per_prefill_token_s=0.001,
)
PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def workloads(draw: st.DrawFn) -> list[Job]:
    num_tenants = draw(st.integers(min_value=2, max_value=8))
    jobs: list[Job] = []
    for t in range(num_tenants):
        for k in range(draw(st.integers(min_value=1, max_value=30))):
            jobs.append(
                make_job(
                    f"t{t}-{k}",
                    tenant=f"t{t}",
                    arrival_s=draw(st.floats(min_value=0, max_value=10, allow_nan=False)),
                    prompt_tokens=draw(st.integers(min_value=1, max_value=64)),
                    max_tokens=draw(st.integers(min_value=1, max_value=64)),
                )
            )
    return jobs


def bound(jobs: list[Job]) -> float:
    # The paper's Theorem: 2 * max(w_in * L_in, w_out * M), M = tokens the KV pool holds.
    longest_prompt = max(job.prompt_tokens for job in jobs)
    return 2 * max(W_IN * longest_prompt, W_OUT * PROFILE.num_kv_tokens)


def max_backlogged_gap(result: SimResult, weights: Mapping[str, float]) -> float:
    """Largest |service_f - service_g| (weight-normalised) over any interval in
    which both f and g had requests waiting at every sampled step."""
    tenants = sorted({tenant for s in result.service_log for tenant in s.backlogged})
    worst = 0.0
    for i, f in enumerate(tenants):
        for g in tenants[i + 1 :]:
            worst = max(worst, _pair_gap(result, f, g, weights))
    return worst


def _pair_gap(result: SimResult, f: str, g: str, weights: Mapping[str, float]) -> float:
    worst, low, high = 0.0, None, None
    for sample in result.service_log:
        if f not in sample.backlogged or g not in sample.backlogged:
            low = high = None
            continue
        diff = _served(sample.input_tokens, sample.output_tokens, f) / weights.get(f, 1.0)
        diff -= _served(sample.input_tokens, sample.output_tokens, g) / weights.get(g, 1.0)
        low = diff if low is None else min(low, diff)
        high = diff if high is None else max(high, diff)
        worst = max(worst, high - low)
    return worst


def _served(inputs: Mapping[str, int], outputs: Mapping[str, int], tenant: str) -> float:
    return W_IN * inputs.get(tenant, 0) + W_OUT * outputs.get(tenant, 0)


@PROPERTY_SETTINGS
@given(workloads())
def test_vtc_keeps_backlogged_tenants_within_the_papers_bound(jobs: list[Job]) -> None:
    result = simulate(jobs, PROFILE, VTCPolicy(), record_service=True)
    assert max_backlogged_gap(result, {}) <= bound(jobs)


@PROPERTY_SETTINGS
@given(workloads(), st.lists(st.sampled_from([1.0, 2.0, 3.0, 4.0]), min_size=8, max_size=8))
def test_weighted_vtc_bounds_the_gap_of_weight_normalised_service(
    jobs: list[Job], weight_list: list[float]
) -> None:
    weights = {f"t{i}": w for i, w in enumerate(weight_list)}
    policy = make_policy("vtc", weights=weights)
    result = simulate(jobs, PROFILE, policy, record_service=True)
    assert max_backlogged_gap(result, weights) <= bound(jobs)


def test_fcfs_can_break_the_bound_which_the_property_would_catch() -> None:
    flood = [make_job(f"a{k}", tenant="a", prompt_tokens=64, max_tokens=64) for k in range(60)]
    late = [make_job(f"b{k}", tenant="b", arrival_s=0.01, max_tokens=64) for k in range(5)]
    result = simulate(flood + late, PROFILE, FCFSPolicy(), record_service=True)
    assert max_backlogged_gap(result, {}) > bound(flood + late)


def _uncovered_waits(result: SimResult) -> list[str]:
    """Requests that waited while no request at all was running."""
    busy = sorted(
        (r.admitted_s, r.finish_s)
        for r in result.records
        if r.admitted_s is not None and r.finish_s is not None
    )
    merged: list[list[float]] = []
    for start, end in busy:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [
        r.request_id
        for r in result.records
        if r.admitted_s is not None
        and r.admitted_s > r.arrival_s
        and not any(s <= r.arrival_s and r.admitted_s <= e for s, e in merged)
    ]


@PROPERTY_SETTINGS
@given(workloads(), st.sampled_from(["fcfs", "lcf", "vtc", "vtc-predict", "rpm5"]))
def test_the_simulator_never_idles_while_a_request_waits(jobs: list[Job], name: str) -> None:
    policy: FairPolicy = make_policy(name)
    result = simulate(jobs, PROFILE, policy)
    assert _uncovered_waits(result) == []


def _timeline(result: SimResult) -> list[tuple[str, float | None, float | None, float | None]]:
    ordered = sorted(result.records, key=lambda r: r.request_id)
    return [(r.request_id, r.admitted_s, r.first_token_s, r.finish_s) for r in ordered]


@PROPERTY_SETTINGS
@given(workloads(), st.sampled_from(["vtc", "lcf", "vtc-predict"]))
def test_billing_in_arrears_decides_exactly_as_billing_every_step(
    jobs: list[Job], name: str
) -> None:
    # The simulator bills lazily for speed; recording service settles every
    # tenant every step. Both must produce the same schedule, to the step.
    lazy = simulate(jobs, PROFILE, make_policy(name))
    eager = simulate(jobs, PROFILE, make_policy(name), record_service=True)
    assert _timeline(lazy) == _timeline(eager)
