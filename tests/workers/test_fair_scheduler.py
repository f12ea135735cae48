"""Fairness of vLLM's real scheduler with `FairScheduler`, and its parity with the simulator.

Service is VTC's cost, input + 2 x output tokens. Unless said otherwise it is the
service the policy billed (the prompt at admission, outputs as produced), read from
the policy's snapshot after every step.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.engine import FinishReason

from scheduler_core import Job, make_policy
from scheduler_core.sim import EngineProfile, ReservePolicy, simulate
from tests.workers.vllm_factories import (
    ServiceTrace,
    Stepper,
    add_all,
    make_request,
    make_requests,
    make_scheduler,
    run_steps,
    runner_output,
    service_by_tenant,
    step,
)
from usage.records import UsageStatus
from workers.vllm_scheduler import FairAsyncScheduler, FairScheduler

MAX_NUM_SEQS = 8
MAX_NUM_BATCHED_TOKENS = 256
STEP_S = 0.01


def last_both_backlogged(trace: ServiceTrace) -> dict[str, float]:
    both = [i for i, tenants in enumerate(trace.backlogged) if len(tenants) == 2]
    assert both, "the two tenants were never backlogged together"
    return trace.service[both[-1]]


def admissions(output) -> list[str]:
    return [new.req_id for new in output.scheduled_new_reqs]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_two_backlogged_tenants_at_weights_1_and_3_split_service_1_to_3(
    tiny_model_dir: Path, asynchronous: bool
) -> None:
    scheduler = make_scheduler(
        tiny_model_dir,
        weights={"globex": 3.0},
        max_num_seqs=MAX_NUM_SEQS,
        max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS,
        async_scheduling=asynchronous,
    )
    add_all(scheduler, make_requests(120, tenant="acme") + make_requests(120, tenant="globex"))
    trace = ServiceTrace()
    stepper = Stepper(scheduler)
    while not stepper.done():
        stepper.step()
        trace.service.append(service_by_tenant(scheduler))
        trace.backlogged.append(frozenset(scheduler.waiting.fair_queue.waiting_tenants()))

    service = last_both_backlogged(trace)
    assert service["globex"] / service["acme"] == pytest.approx(3.0, rel=0.05)
    assert service["acme"] > 2_000  # long enough for the split to mean something


def test_counters_move_between_admissions_within_one_step(tiny_model_dir: Path) -> None:
    scheduler = make_scheduler(tiny_model_dir, max_num_seqs=8, max_num_batched_tokens=512)
    add_all(scheduler, make_requests(10, tenant="acme") + make_requests(10, tenant="globex"))
    admitted = admissions(step(scheduler))
    assert [request_id.split("-")[0] for request_id in admitted] == ["acme", "globex"] * 4


def test_a_late_tenant_is_served_ahead_of_the_heavy_tenants_queue_without_banked_credit(
    tiny_model_dir: Path,
) -> None:
    scheduler = make_scheduler(tiny_model_dir, max_num_seqs=4, max_num_batched_tokens=128)
    add_all(scheduler, make_requests(60, tenant="acme"))
    for _ in range(60):
        step(scheduler)
    queued_acme = len(scheduler.waiting)
    before = service_by_tenant(scheduler)

    add_all(scheduler, make_requests(30, tenant="globex"))
    # Lifted to the smallest waiting counter: neither behind acme's queue, nor ahead of it
    # with a counter still at zero. (The live state is read as the next step would see it.)
    counters = {t: c["counter"] for t, c in scheduler.fair_state()["tenants"].items()}
    assert counters["globex"] == counters["acme"] > 0
    admitted: list[str] = []
    trace = ServiceTrace()
    while len(admitted) < 2:
        admitted += admissions(step(scheduler))
    run_steps(scheduler, trace=trace)

    assert queued_acme > 20
    assert any(request_id.startswith("globex") for request_id in admitted[:2])
    after = last_both_backlogged(trace)
    gained = {t: after[t] - before.get(t, 0.0) for t in after}
    assert gained["globex"] / (gained["globex"] + gained["acme"]) == pytest.approx(0.5, abs=0.05)


def test_set_weight_mid_run_changes_the_split(tiny_model_dir: Path) -> None:
    scheduler = make_scheduler(tiny_model_dir, max_num_seqs=4, max_num_batched_tokens=128)
    add_all(scheduler, make_requests(150, tenant="acme") + make_requests(150, tenant="globex"))
    for _ in range(150):
        step(scheduler)
    even = service_by_tenant(scheduler)

    scheduler.set_weight("globex", 3.0)
    trace = ServiceTrace()
    run_steps(scheduler, trace=trace)
    after = last_both_backlogged(trace)

    assert even["globex"] / even["acme"] == pytest.approx(1.0, rel=0.05)
    gained = {t: after[t] - even[t] for t in after}
    assert gained["globex"] / gained["acme"] == pytest.approx(3.0, rel=0.05)


# -- the same workload through the simulator and through vLLM -----------------------------

ARRIVALS = {"acme": 0.0, "globex": 0.2}
SHAPES = {"acme": (48, 12), "globex": (24, 20)}  # (prompt tokens, output tokens)
NUM_EACH = 100
NUM_BLOCKS = 1000


def window_share(samples: list[dict[str, float]]) -> float:
    """acme's share of the service given between the first and last of `samples`."""
    gained = {t: samples[-1][t] - samples[0][t] for t in ARRIVALS}
    return gained["acme"] / sum(gained.values())


def parity_jobs() -> list[Job]:
    return [
        Job(f"{tenant}-{i}", tenant, ARRIVALS[tenant], *SHAPES[tenant])
        for tenant in ("acme", "globex")
        for i in range(NUM_EACH)
    ]


def simulated_share() -> float:
    profile = EngineProfile(
        name="parity-test",
        num_kv_tokens=(NUM_BLOCKS - 1) * 16,
        step_base_s=STEP_S,
        step_per_prefill_token_s=0.0,
        step_per_seq_s=0.0,
        step_per_kv_token_s=0.0,
        reserve=ReservePolicy.ON_DEMAND,
        source="the vLLM test harness: fixed 10 ms steps",
        max_num_seqs=MAX_NUM_SEQS,
        max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS,
    )
    policy = make_policy("vtc", weights={"globex": 3.0})
    result = simulate(parity_jobs(), profile, policy, record_service=True)
    return window_share(
        [
            {
                t: sample.input_tokens.get(t, 0) + 2 * sample.output_tokens.get(t, 0)
                for t in ARRIVALS
            }
            for sample in result.service_log
            if len(sample.backlogged) == 2
        ]
    )


def served_by_tenant(scheduler) -> dict[str, float]:
    """Tokens computed (not billed) so far, as the simulator counts them."""
    served = dict.fromkeys(ARRIVALS, 0.0)
    for usage in scheduler.usage_log + scheduler.meter.live_usage(scheduler.clock()):
        served[usage.tenant] += usage.prompt_tokens + 2 * usage.output_tokens
    return served


def vllm_share(tiny_model_dir: Path) -> float:
    scheduler = make_scheduler(
        tiny_model_dir,
        num_blocks=NUM_BLOCKS,
        weights={"globex": 3.0},
        max_num_seqs=MAX_NUM_SEQS,
        max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS,
    )
    pending = {job.tenant: job for job in parity_jobs()}  # one representative per tenant
    trace = ServiceTrace()
    while pending or scheduler.has_requests():
        for tenant in [t for t in pending if ARRIVALS[t] <= scheduler.clock() + 1e-9]:
            prompt, output = SHAPES[tenant]
            add_all(scheduler, make_requests(NUM_EACH, tenant=tenant, prompt_tokens=prompt,
                                             max_tokens=output))  # fmt: skip
            del pending[tenant]
        step(scheduler, seconds=STEP_S)
        trace.service.append(served_by_tenant(scheduler))
        trace.backlogged.append(frozenset(scheduler.waiting.fair_queue.waiting_tenants()))
    return window_share(
        [
            served
            for served, tenants in zip(trace.service, trace.backlogged, strict=True)
            if len(tenants) == 2
        ]
    )


def test_the_simulator_and_vllm_split_the_same_workload_alike(tiny_model_dir: Path) -> None:
    sim, real = simulated_share(), vllm_share(tiny_model_dir)
    print(f"acme's share while both are backlogged: simulator {sim:.4f}, vLLM {real:.4f}")
    assert abs(sim - real) <= 0.05
    assert real == pytest.approx(0.25, abs=0.05)


# -- policies that reject, and modes FairScheduler does not assume ----------------------------


def test_a_request_the_policy_rejects_ends_with_an_error_reported_once(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARITY_POLICY", "rpm1")
    scheduler = make_scheduler(tiny_model_dir)
    add_all(scheduler, [make_request("allowed"), make_request("over-limit")])
    assert scheduler.has_requests()

    output = scheduler.schedule()
    assert [request.request_id for request in scheduler.running] == ["allowed"]
    assert not scheduler.waiting  # the rejected one waits nowhere
    engine_outputs = scheduler.update_from_output(output, runner_output(scheduler, output))
    ended = {o.request_id: o.finish_reason for o in engine_outputs[0].outputs}
    run_steps(scheduler)

    assert ended["over-limit"] == FinishReason.ERROR
    statuses = {u.request_id: u.status for u in scheduler.usage_log}
    assert statuses == {"allowed": UsageStatus.FINISHED, "over-limit": UsageStatus.ERROR}
    snapshot = scheduler.fair_policy.snapshot()["acme"]
    assert (snapshot["num_rejected"], snapshot["num_finished"]) == (1, 1)


def test_the_fair_scheduler_follows_vllms_choice_of_async_scheduling(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="workers.vllm_scheduler"):
        asynchronous = make_scheduler(tiny_model_dir, async_scheduling=True)
        synchronous = make_scheduler(tiny_model_dir, async_scheduling=False)

    assert type(asynchronous) is FairAsyncScheduler
    assert isinstance(asynchronous, AsyncScheduler)
    assert type(synchronous) is FairScheduler
    assert "async_scheduling" not in caplog.text


def test_justitia_inside_vllm_serves_the_cheaper_application_first(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARITY_POLICY", "justitia-ma")
    scheduler = make_scheduler(tiny_model_dir, max_num_seqs=2, max_num_batched_tokens=256)
    long_app = [
        make_request(f"long-{i}", app="long", prompt_tokens=64, max_tokens=64) for i in range(2)
    ]
    short_app = [
        make_request(f"short-{i}", app="short", prompt_tokens=8, max_tokens=4) for i in range(2)
    ]
    add_all(scheduler, long_app + short_app)

    first = step(scheduler)

    assert sorted(admissions(first)) == ["short-0", "short-1"]  # both calls of the first app
    run_steps(scheduler)
    flows = {record.request_id: record for record in scheduler.usage_log}  # type: ignore[attr-defined]
    assert set(flows) == {"long-0", "long-1", "short-0", "short-1"}
    assert scheduler.fair_policy.snapshot()["acme"]["open_apps"] == 2.0  # apps idle, not closed
