from __future__ import annotations

import pytest

from scheduler_core.costs import LinearCost, ProfiledCost
from scheduler_core.fair_queue import FairQueue
from scheduler_core.policies import LCFPolicy, PredictiveVTCPolicy, VTCPolicy
from scheduler_core.predictors import MovingAveragePredictor, OraclePredictor

from .factories import make_job


def admit(queue: FairQueue, now: float = 0.0) -> str:
    job = queue.pop()
    queue.policy.on_admit(job, now)
    return job.request_id


def test_admission_charges_the_prompt_and_decoding_charges_twice_per_token() -> None:
    policy = VTCPolicy()
    job = make_job("a1", prompt_tokens=100, max_tokens=50)
    policy.on_admit(job, 0.0)
    assert policy.counter("alice") == 100
    policy.charge(job, input_tokens=100, output_tokens=3)
    assert policy.counter("alice") == 106  # the prompt is not billed twice


def test_recomputed_prompt_tokens_after_preemption_are_not_billed_again() -> None:
    policy = VTCPolicy()
    job = make_job("a1", prompt_tokens=10, max_tokens=50)
    policy.on_admit(job, 0.0)
    policy.charge(job, 10, 4)
    policy.on_admit(job, 5.0)  # re-admitted after preemption
    policy.charge(job, 14, 1)  # recompute of prompt + 4 outputs, then one new token
    assert policy.counter("alice") == 10 + 2 * 5
    assert policy.snapshot()["alice"]["num_admitted"] == 1


def test_weights_divide_the_charge() -> None:
    policy = VTCPolicy()
    policy.set_weight("alice", 4.0)
    policy.on_admit(make_job("a1", prompt_tokens=100), 0.0)
    assert policy.counter("alice") == 25


def test_a_weight_change_applies_to_future_charges_only() -> None:
    policy = VTCPolicy()
    job = make_job("a1", prompt_tokens=10, max_tokens=100)
    policy.on_admit(job, 0.0)
    policy.set_weight("alice", 2.0)
    policy.charge(job, 0, 10)
    assert policy.counter("alice") == 10 + 20 / 2


def test_non_positive_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        VTCPolicy().set_weight("alice", 0)


def test_negative_charges_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        VTCPolicy().charge(make_job(), -1, 0)


def test_the_waiting_tenant_with_the_smallest_counter_is_served_first() -> None:
    policy = VTCPolicy()
    queue = FairQueue(policy)
    queue.push(make_job("a1", tenant="alice", prompt_tokens=50), 0.0)
    queue.push(make_job("a2", tenant="alice", prompt_tokens=50), 0.0)
    queue.push(make_job("b1", tenant="bob", prompt_tokens=10), 0.0)
    queue.push(make_job("b2", tenant="bob", prompt_tokens=10), 0.0)
    # alice 0, bob 0 -> alice (joined first); alice 50 -> bob; bob 10 -> bob; bob 20 -> alice
    assert [admit(queue) for _ in range(4)] == ["a1", "b1", "b2", "a2"]


def test_a_tenant_joining_a_busy_queue_is_lifted_to_the_smallest_waiting_counter() -> None:
    policy = VTCPolicy()
    queue = FairQueue(policy)
    queue.push(make_job("a1", tenant="alice", prompt_tokens=100), 0.0)
    queue.push(make_job("a2", tenant="alice", prompt_tokens=100), 0.0)
    admit(queue)  # alice's counter: 100, and she is still waiting
    queue.push(make_job("b1", tenant="bob"), 1.0)
    assert policy.counter("bob") == 100


def test_a_tenant_returning_after_idle_is_lifted_to_the_last_leaver() -> None:
    policy = VTCPolicy()
    queue = FairQueue(policy)
    queue.push(make_job("a1", tenant="alice", prompt_tokens=300), 0.0)
    admit(queue)  # alice leaves the queue with counter 300
    queue.push(make_job("b1", tenant="bob"), 1.0)
    assert policy.counter("bob") == 300


def test_the_lift_never_lowers_a_counter() -> None:
    policy = VTCPolicy()
    queue = FairQueue(policy)
    queue.push(make_job("b0", tenant="bob", prompt_tokens=500, max_tokens=100), 0.0)
    bobs_running = queue.pop()
    policy.on_admit(bobs_running, 0.0)
    queue.push(make_job("a1", tenant="alice", prompt_tokens=10), 1.0)  # lifted to 500
    admit(queue)  # alice: 510, and she is the last to leave
    policy.charge(bobs_running, 0, 100)  # bob: 700
    queue.push(make_job("b1", tenant="bob"), 2.0)
    assert policy.counter("alice") == 510
    assert policy.counter("bob") == 700


def test_a_preempted_request_returning_is_not_lifted() -> None:
    policy = VTCPolicy()
    queue = FairQueue(policy)
    queue.push(make_job("a1", tenant="alice", prompt_tokens=100), 0.0)
    queue.push(make_job("b1", tenant="bob", prompt_tokens=10), 0.0)
    queue.push(make_job("b2", tenant="bob", prompt_tokens=10), 0.0)
    admit(queue)  # a1: alice 100
    preempted = queue.pop()
    policy.on_admit(preempted, 0.0)  # b1: bob 10
    queue.pop()  # b2 leaves too, so bob has nothing waiting
    queue.prepend(preempted)
    assert policy.counter("bob") == 10


def test_lcf_does_not_lift_a_returning_tenant_and_lets_it_catch_up() -> None:
    policy = LCFPolicy()
    queue = FairQueue(policy)
    queue.push(make_job("a1", tenant="alice", prompt_tokens=300), 0.0)
    admit(queue)
    for i in range(3):
        queue.push(make_job(f"b{i}", tenant="bob", prompt_tokens=100), 1.0)
    queue.push(make_job("a2", tenant="alice", prompt_tokens=10), 1.0)
    assert policy.counter("bob") == 0
    assert [admit(queue) for _ in range(4)] == ["b0", "b1", "b2", "a2"]


def test_snapshot_reports_plain_per_tenant_numbers() -> None:
    policy = VTCPolicy()
    job = make_job("a1", prompt_tokens=10)
    policy.on_arrival(job, 0.0)
    policy.on_admit(job, 0.0)
    policy.charge(job, 10, 2, kv_block_steps=3)
    policy.on_finish(job, 1.0)
    snap = policy.snapshot()["alice"]
    assert snap == {
        "weight": 1.0,
        "num_arrived": 1,
        "num_rejected": 0,
        "num_admitted": 1,
        "num_finished": 1,
        "input_tokens": 10,
        "output_tokens": 2,
        "kv_block_steps": 3,
        "counter": 14.0,
        "waiting": 0.0,
    }


def test_a_custom_linear_cost_changes_the_charges() -> None:
    policy = VTCPolicy(LinearCost(w_in=0.5, w_out=1.0))
    job = make_job("a1", prompt_tokens=10)
    policy.on_admit(job, 0.0)
    policy.charge(job, 0, 4)
    assert policy.counter("alice") == 9


def test_the_profiled_cost_is_charged_incrementally_to_its_total() -> None:
    cost = ProfiledCost()
    policy = VTCPolicy(cost)
    job = make_job("a1", prompt_tokens=100, max_tokens=20)
    policy.on_admit(job, 0.0)
    for _ in range(20):
        policy.charge(job, 0, 1)
    assert policy.counter("alice") == pytest.approx(cost.total(100, 20))


def test_prediction_is_billed_at_admission_and_the_excess_after_it() -> None:
    policy = PredictiveVTCPolicy(OraclePredictor())
    job = make_job("a1", prompt_tokens=10, max_tokens=100, output_tokens=30)
    policy.on_admit(job, 0.0)
    assert policy.counter("alice") == 10 + 2 * 30
    policy.charge(job, 0, 30)
    assert policy.counter("alice") == 70
    policy.charge(job, 0, 5)  # beyond the prediction (impossible for an exact oracle)
    assert policy.counter("alice") == 80


def test_the_unused_prediction_is_refunded_at_finish() -> None:
    policy = PredictiveVTCPolicy(MovingAveragePredictor(default_tokens=50))
    job = make_job("a1", prompt_tokens=10, max_tokens=100)
    policy.on_admit(job, 0.0)
    assert policy.counter("alice") == 110
    policy.charge(job, 0, 20)
    policy.on_finish(job, 1.0)
    assert policy.counter("alice") == 10 + 2 * 20


def test_the_moving_average_learns_each_tenants_output_length() -> None:
    predictor = MovingAveragePredictor(window=2)
    for tokens in (10, 20, 40):
        predictor.observe(make_job(tenant="alice", max_tokens=100), tokens)
    assert predictor.predict(make_job(tenant="alice", max_tokens=100)) == 30
    assert predictor.predict(make_job(tenant="bob", max_tokens=100)) == 100
    assert predictor.predict(make_job(tenant="alice", max_tokens=25)) == 25


def test_a_noisy_oracle_stays_within_its_band_and_repeats_with_its_seed() -> None:
    job = make_job(max_tokens=1000, output_tokens=100)
    first = [OraclePredictor(noise=0.5, seed=7).predict(job) for _ in range(1)]
    again = [OraclePredictor(noise=0.5, seed=7).predict(job) for _ in range(1)]
    guesses = [OraclePredictor(noise=0.5, seed=s).predict(job) for s in range(50)]
    assert first == again
    assert all(50 <= g <= 150 for g in guesses)
    assert len(set(guesses)) > 10


# -- outputs charged per tenant, applied when read -----------------------------------------


def test_outputs_left_unbilled_count_as_soon_as_a_counter_is_read() -> None:
    policy = VTCPolicy()
    policy.set_weight("bob", 2.0)
    policy.unbilled_outputs.update(alice=3, bob=4)
    assert policy.counter("alice") == 6
    assert policy.counter("bob") == 4  # 2 x 4 tokens at weight 2
    assert policy.unbilled_outputs == {}
    assert policy.snapshot()["alice"]["output_tokens"] == 3


def test_a_snapshot_includes_outputs_not_yet_applied() -> None:
    policy = VTCPolicy()
    policy.unbilled_outputs["alice"] = 5
    snapshot = policy.snapshot()["alice"]
    assert (snapshot["output_tokens"], snapshot["counter"]) == (5, 10)


def test_unbilled_outputs_are_charged_at_the_weight_they_were_produced_under() -> None:
    policy = VTCPolicy()
    policy.unbilled_outputs["alice"] = 10
    policy.set_weight("alice", 4.0)
    assert policy.counter("alice") == 20  # 2 x 10 at weight 1, before the change


def test_the_pick_sees_outputs_left_unbilled_by_the_engine() -> None:
    policy = VTCPolicy()
    queue = FairQueue(policy)
    for job in ("a1", "a2"):
        queue.push(make_job(job, tenant="alice", prompt_tokens=10), 0.0)
    for job in ("b1", "b2"):
        queue.push(make_job(job, tenant="bob", prompt_tokens=10), 0.0)
    assert [admit(queue), admit(queue)] == ["a1", "b1"]  # both at 10
    policy.unbilled_outputs["alice"] = 1  # alice 12, bob 10: bob is behind now
    assert admit(queue) == "b2"


def test_only_a_linear_cost_without_a_ledger_may_be_charged_per_tenant() -> None:
    assert VTCPolicy().charges_by_tenant
    assert LCFPolicy().charges_by_tenant
    assert not VTCPolicy(ProfiledCost()).charges_by_tenant
    assert not PredictiveVTCPolicy(OraclePredictor()).charges_by_tenant


def test_charge_step_bills_each_job_as_charge_would() -> None:
    stepped, charged = VTCPolicy(ProfiledCost()), VTCPolicy(ProfiledCost())
    jobs = [make_job("a1", prompt_tokens=10), make_job("b1", tenant="bob", prompt_tokens=20)]
    for policy in (stepped, charged):
        for job in jobs:
            policy.on_admit(job, 0.0)
    stepped.charge_step([(jobs[0], 0, 3, 2), (jobs[1], 0, 1, 0), (jobs[0], 0, 2, 0)])
    for job, output, kv in ((jobs[0], 3, 2), (jobs[1], 1, 0), (jobs[0], 2, 0)):
        charged.charge(job, 0, output, kv)
    assert stepped.snapshot() == charged.snapshot()
