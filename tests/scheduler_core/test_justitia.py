"""Justitia: virtual time, fair completion order, misprediction correction, weights, the bound."""

from __future__ import annotations

import pytest

from scheduler_core import FairQueue, make_policy
from scheduler_core.app_experiment import delay_bounds, run_app_cell, solo_times
from scheduler_core.app_metrics import delivered_work, outcomes, reference_finish_times
from scheduler_core.apps import AppInfo, Application, AppType, CallSpec
from scheduler_core.demand import DemandPredictor, OracleDemand
from scheduler_core.policies.justitia import JustitiaPolicy
from scheduler_core.sim.app_workloads import make_app_workload
from scheduler_core.sim.engine import simulate
from scheduler_core.sim.profiles import get_profile
from scheduler_core.virtual_time import VirtualClock
from tests.scheduler_core.factories import make_job, make_profile


class FixedDemand:
    """Predicts whatever the test says, per application id."""

    name = "fixed"

    def __init__(self, costs: dict[str, float]) -> None:
        self.costs = costs
        self.observed: dict[str, float] = {}

    def predict(self, info: AppInfo) -> float:
        return self.costs[info.app_id]

    def observe(self, info: AppInfo, cost: float) -> None:
        self.observed[info.app_id] = cost


def announce(policy: JustitiaPolicy, app_id: str, tenant: str = "acme", at: float = 0.0) -> None:
    policy.on_app_arrival(AppInfo(app_id, tenant, at, num_calls=1), at)


def call_of(app_id: str, tenant: str = "acme", prompt: int = 10, max_tokens: int = 100):
    return make_job(
        f"{app_id}/0", tenant=tenant, prompt_tokens=prompt, max_tokens=max_tokens, app=app_id
    )


def justitia(costs: dict[str, float], **weights: float) -> JustitiaPolicy:
    predictor: DemandPredictor = FixedDemand(costs)
    policy = JustitiaPolicy(predictor)
    for tenant, weight in weights.items():
        policy.set_weight(tenant, weight)
    return policy


# -- the virtual clock ----------------------------------------------------------------------


def test_virtual_time_moves_by_work_over_the_backlogged_weight() -> None:
    clock = VirtualClock()
    clock.set("small", finish=100.0, weight=1.0)
    clock.set("large", finish=300.0, weight=1.0)

    assert clock.advance(100.0) == []
    assert clock.now == pytest.approx(50.0)  # 100 work shared by weight 2
    assert clock.advance(100.0) == [("small", 100.0)]  # V reaches 100 with all the work
    assert clock.now == pytest.approx(100.0)
    assert clock.advance(200.0) == [("large", 200.0)]  # alone now: 200 work moves V by 200
    assert clock.now == pytest.approx(300.0)


def test_departures_inside_one_advance_change_the_rate_for_the_rest() -> None:
    clock = VirtualClock()
    clock.set("a", finish=10.0, weight=1.0)
    clock.set("b", finish=100.0, weight=3.0)

    # 40 work takes V to 10 (a leaves); the other 60 go to b alone at weight 3.
    assert clock.advance(100.0) == [("a", 40.0)]
    assert clock.now == pytest.approx(30.0)


def test_an_idle_reference_does_not_move() -> None:
    clock = VirtualClock()
    assert clock.advance(500.0) == []
    assert clock.now == 0.0


def test_weights_count_in_the_finish_and_the_sharing() -> None:
    clock = VirtualClock()
    clock.set("light", finish=100.0, weight=1.0)  # cost 100 at weight 1
    clock.set("heavy", finish=100.0, weight=3.0)  # cost 300 at weight 3
    assert sorted(clock.advance(400.0)) == [("heavy", 400.0), ("light", 400.0)]
    assert clock.now == pytest.approx(100.0)


# -- the policy's arithmetic ------------------------------------------------------------------


def test_an_application_starts_at_the_virtual_time_of_its_arrival() -> None:
    policy = justitia({"first": 100.0, "second": 40.0})
    announce(policy, "first")
    first = call_of("first")
    policy.on_arrival(first, 0.0)
    policy.on_admit(first, 0.0)
    policy.charge(first, 10, 5)  # 10*5 + 25/2 = 62.5 token-steps, first alone

    announce(policy, "second", at=1.0)
    second = policy.app("acme", "second")
    assert second is not None
    assert second.start_v == pytest.approx(62.5)
    assert second.finish_v == pytest.approx(62.5 + 40.0)


def test_the_smallest_virtual_finish_goes_first_whatever_the_arrival_order() -> None:
    policy = justitia({"big": 900.0, "small": 50.0, "medium": 300.0})
    queue = FairQueue(policy)
    for app_id in ("big", "small", "medium"):
        announce(policy, app_id)
        queue.push(call_of(app_id), 0.0)

    assert [job.app for job in queue] == ["small", "medium", "big"]


def test_a_tenant_of_weight_two_finishes_twice_the_cost_as_early() -> None:
    policy = justitia({"heavy": 200.0, "light": 150.0}, gold=2.0)
    queue = FairQueue(policy)
    announce(policy, "light", tenant="acme")
    announce(policy, "heavy", tenant="gold")
    queue.push(call_of("light", tenant="acme"), 0.0)
    queue.push(call_of("heavy", tenant="gold"), 0.0)

    heavy = policy.app("gold", "heavy")
    assert heavy is not None and heavy.finish_v == pytest.approx(100.0)
    assert queue.peek().app == "heavy"  # type: ignore[union-attr]


def test_all_ready_calls_of_the_first_application_go_before_the_next() -> None:
    policy = justitia({"wide": 100.0, "other": 150.0})
    queue = FairQueue(policy)
    announce(policy, "wide")
    announce(policy, "other")
    queue.push(call_of("other"), 0.0)
    for i in range(3):
        queue.push(make_job(f"wide/{i}", tenant="acme", app="wide"), 0.0)

    assert [queue.pop().request_id for _ in range(4)] == ["wide/0", "wide/1", "wide/2", "other/0"]


def test_two_tenants_with_the_same_app_id_are_two_applications() -> None:
    policy = justitia({"report": 100.0})
    queue = FairQueue(policy)
    announce(policy, "report", tenant="acme")
    announce(policy, "report", tenant="globex")
    queue.push(call_of("report", tenant="acme"), 0.0)
    queue.push(make_job("report/1", tenant="globex", app="report"), 0.0)

    assert queue.num_waiting("acme") == 1 and queue.num_waiting("globex") == 1
    assert policy.app("acme", "report") is not policy.app("globex", "report")


def test_an_application_that_outgrows_its_prediction_moves_back_as_cost_accrues() -> None:
    policy = justitia({"underrated": 10.0, "honest": 500.0})
    queue = FairQueue(policy)
    announce(policy, "underrated")
    announce(policy, "honest")
    runaway = call_of("underrated", max_tokens=1000)
    queue.push(runaway, 0.0)
    queue.push(make_job("underrated/1", tenant="acme", app="underrated"), 0.0)
    queue.push(call_of("honest"), 0.0)
    assert queue.pop() is runaway
    policy.on_admit(runaway, 0.0)

    policy.charge(runaway, 10, 40)  # 10*40 + 40^2/2 = 1200 token-steps, far past 10

    state = policy.app("acme", "underrated")
    assert state is not None and state.finish_v == pytest.approx(1200.0)
    assert queue.peek().app == "honest"  # type: ignore[union-attr]


def test_an_over_prediction_delays_only_the_application_itself() -> None:
    policy = justitia({"overrated": 10_000.0, "a": 100.0, "b": 200.0})
    queue = FairQueue(policy)
    for app_id in ("overrated", "a", "b"):
        announce(policy, app_id)
        queue.push(call_of(app_id), 0.0)

    assert [job.app for job in queue] == ["a", "b", "overrated"]


def test_a_weight_change_keeps_service_given_and_shares_the_rest_at_the_new_weight() -> None:
    policy = justitia({"job": 400.0})
    announce(policy, "job")
    call = call_of("job", prompt=10, max_tokens=100)
    policy.on_arrival(call, 0.0)
    policy.on_admit(call, 0.0)
    policy.charge(call, 10, 10)  # 100 + 50 = 150 token-steps; alone, so V = 150

    policy.set_weight("acme", 2.0)

    state = policy.app("acme", "job")
    assert state is not None
    assert state.finish_v == pytest.approx(150.0 + (400.0 - 150.0) / 2.0)
    assert policy.clock.finish_of(state.flow) == pytest.approx(state.finish_v)


def test_a_finished_application_teaches_the_predictor_its_true_cost() -> None:
    predictor = FixedDemand({"job": 400.0})
    policy = JustitiaPolicy(predictor)
    announce(policy, "job")
    call = call_of("job", prompt=10, max_tokens=100)
    policy.on_arrival(call, 0.0)
    policy.on_admit(call, 0.0)
    policy.charge(call, 10, 4)
    policy.on_finish(call, 1.0)

    assert predictor.observed == {"job": pytest.approx(10 * 4 + 16 / 2)}
    assert policy.app("acme", "job") is None


def test_calls_without_an_application_are_applications_of_one_call() -> None:
    policy = JustitiaPolicy(OracleDemand())
    queue = FairQueue(policy)
    queue.push(make_job("lone-1", prompt_tokens=10, max_tokens=8), 0.0)
    queue.push(make_job("lone-2", prompt_tokens=10, max_tokens=800), 0.0)

    assert [job.request_id for job in queue] == ["lone-1", "lone-2"]
    job = queue.pop()
    policy.on_admit(job, 0.0)
    policy.on_finish(job, 1.0)
    assert policy.snapshot()["alice"]["open_apps"] == 1.0


def test_an_application_of_unknown_size_closes_after_its_idle_timeout() -> None:
    policy = JustitiaPolicy(OracleDemand(), idle_timeout_s=5.0)
    first = make_job("agent-step-1", app="agent", arrival_s=0.0)
    policy.on_arrival(first, 0.0)
    policy.on_admit(first, 0.0)
    policy.on_finish(first, 1.0)
    assert policy.app("alice", "agent") is not None  # a tool may be running

    later = make_job("agent-step-2", app="agent", arrival_s=10.0)
    policy.on_arrival(later, 10.0)
    reopened = policy.app("alice", "agent")
    assert reopened is not None and reopened.done_calls == 0


# -- the simulator runs applications ---------------------------------------------------------


def two_stage_app(app_id: str = "mr", delay_s: float = 2.0) -> Application:
    maps = tuple(CallSpec(i, 16, 4, 4) for i in range(2))
    reduce = CallSpec(2, 16, 4, 4, parents=(0, 1), delay_s=delay_s)
    return Application(app_id, "alice", 0.0, AppType.MAP_REDUCE, (*maps, reduce))


def test_a_call_arrives_only_after_its_parents_finish_and_its_delay() -> None:
    result = simulate([], make_profile(), make_policy("fcfs"), apps=[two_stage_app()])

    calls = {record.request_id: record for record in result.records}
    maps_done = max(calls["mr/0"].finish_s or 0, calls["mr/1"].finish_s or 0)
    assert calls["mr/2"].arrival_s == pytest.approx(maps_done + 2.0)
    assert all(record.app == "mr" for record in result.records)


def test_the_policy_hears_of_an_application_before_its_first_call() -> None:
    predictor = FixedDemand({"mr": 123.0})
    simulate([], make_profile(), JustitiaPolicy(predictor), apps=[two_stage_app()])
    assert predictor.observed["mr"] == pytest.approx(two_stage_app().true_cost)


def test_the_reference_shares_work_by_weight_until_each_true_cost_is_served() -> None:
    small = Application("s", "acme", 0.0, AppType.CHAT, (CallSpec(0, 10, 10, 10),))  # cost 150
    large = Application("l", "acme", 0.0, AppType.CHAT, (CallSpec(0, 10, 30, 30),))  # cost 750
    times = [0.0, 100.0]
    work = [0.0, 10_000.0]  # 100 token-steps a second

    import numpy as np

    finish = reference_finish_times([small, large], {}, np.array(times), np.array(work))

    assert finish["s"] == pytest.approx(3.0)  # 300 work shared by two: 150 each
    assert finish["l"] == pytest.approx(9.0)  # then 600 more alone


def test_delivered_work_adds_up_to_every_finished_calls_memory_cost() -> None:
    workload = make_app_workload("map_reduce", seed=3)
    profile = get_profile("a100-llama2-13b")
    result = simulate([], profile, make_policy("vtc"), apps=workload.apps[:20])
    _, work = delivered_work(result.records)
    assert work[-1] == pytest.approx(sum(app.true_cost for app in workload.apps[:20]))


# -- the bound and the headline ----------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_cells():
    workload = make_app_workload("mixed", seed=0)
    profile = get_profile("a100-llama2-13b")
    solo = solo_times(workload.apps, profile)
    return {
        policy: run_app_cell(workload, policy, profile, solo)
        for policy in ("vtc", "justitia", "justitia-oracle")
    }


def test_with_exact_demand_no_application_finishes_later_than_its_bound(mixed_cells) -> None:
    cell = mixed_cells["justitia-oracle"]
    bounds = delay_bounds(cell.workload.apps, cell.result.records)
    assert len(cell.outcomes) == len(cell.workload.apps)
    for outcome in cell.outcomes:
        assert outcome.finish_s <= outcome.ideal_finish_s + bounds[outcome.app_id] + 1e-6


def test_the_learned_predictor_keeps_every_application_within_its_bound(mixed_cells) -> None:
    assert mixed_cells["justitia"].summary.bound_violations == 0


def test_the_bound_is_a_real_constraint_that_vtc_breaks(mixed_cells) -> None:
    assert mixed_cells["vtc"].summary.bound_violations > 0


def test_justitia_cuts_mean_completion_well_below_vtc(mixed_cells) -> None:
    vtc = mixed_cells["vtc"].summary.mean_completion_s
    oracle = mixed_cells["justitia-oracle"].summary.mean_completion_s
    learned = mixed_cells["justitia"].summary.mean_completion_s
    assert oracle <= 0.6 * vtc
    assert learned <= 0.8 * vtc
    assert oracle <= learned


def test_outcomes_cover_only_applications_whose_calls_all_finished() -> None:
    workload = make_app_workload("agent", seed=1)
    apps = workload.apps[:5]
    profile = get_profile("a100-llama2-13b")
    result = simulate([], profile, make_policy("justitia-oracle"), apps=apps)
    done = outcomes(apps, result.records, {}, solo_times(apps, profile))
    assert {outcome.app_id for outcome in done} == {app.app_id for app in apps}
    solo = solo_times(apps, profile)
    assert all(outcome.completion_s >= solo[outcome.app_id] - 1e-9 for outcome in done)
