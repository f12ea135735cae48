"""What the fair scheduler bills: per step to the policy, per request in `SchedulerUsage`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from vllm.v1.request import RequestStatus

from tests.workers.vllm_factories import (
    BLOCK_SIZE,
    HEAD_SIZE,
    NUM_KV_HEADS,
    NUM_LAYERS,
    add_all,
    make_request,
    make_requests,
    make_scheduler,
    run_steps,
    step,
)
from usage.records import SchedulerUsage, UsageStatus
from workers.kv_meter import GIB


def totals_by_tenant(records: list[SchedulerUsage]) -> dict[str, dict[str, int]]:
    totals: dict[str, Counter[str]] = {}
    for usage in records:
        tally = totals.setdefault(usage.tenant, Counter())
        tally["billable_input"] += usage.num_prompt_tokens - usage.cached_tokens
        tally["output_tokens"] += usage.output_tokens
        tally["kv_block_steps"] += usage.kv_block_steps
        tally["num_finished"] += 1
    return {tenant: dict(tally) for tenant, tally in totals.items()}


def policy_totals(scheduler) -> dict[str, dict[str, int]]:
    return {
        tenant: {
            "billable_input": int(c["input_tokens"]),
            "output_tokens": int(c["output_tokens"]),
            "kv_block_steps": int(c["kv_block_steps"]),
            "num_finished": int(c["num_finished"]),
        }
        for tenant, c in scheduler.fair_policy.snapshot().items()
    }


def test_the_policy_totals_equal_the_sum_of_the_usage_records(tiny_model_dir: Path) -> None:
    scheduler = make_scheduler(tiny_model_dir, max_num_seqs=4, max_num_batched_tokens=64)
    add_all(scheduler, make_requests(7, tenant="acme", prompt_tokens=40, max_tokens=9))
    add_all(scheduler, make_requests(5, tenant="globex", prompt_tokens=70, max_tokens=20))
    run_steps(scheduler)

    records = scheduler.usage_log
    assert totals_by_tenant(records) == policy_totals(scheduler)
    assert sorted(u.request_id for u in records) == sorted(
        [f"acme-{i}" for i in range(7)] + [f"globex-{i}" for i in range(5)]
    )
    assert {u.status for u in records} == {UsageStatus.FINISHED}
    assert all(u.prompt_tokens == u.num_prompt_tokens for u in records)
    assert all(u.output_tokens == (9 if u.tenant == "acme" else 20) for u in records)


def test_a_chunked_prompt_is_charged_step_by_step(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARITY_POLICY", "fcfs")  # bills input as computed (VTC: at admission)
    scheduler = make_scheduler(tiny_model_dir, max_num_seqs=2, max_num_batched_tokens=32)
    scheduler.add_request(make_request("long", prompt_tokens=100, max_tokens=3))

    charged, measured = [], []
    for _ in range(4):
        step(scheduler)
        charged.append(scheduler.fair_policy.snapshot()["acme"]["input_tokens"])
        measured.append(scheduler.meter.get("long").usage.prompt_tokens)

    assert charged == [32, 64, 96, 100]
    assert measured == [32, 64, 96, 100]
    run_steps(scheduler)
    (usage,) = scheduler.usage_log
    assert (usage.prompt_tokens, usage.output_tokens) == (100, 3)


def test_vtc_bills_a_chunked_prompt_once_at_admission(tiny_model_dir: Path) -> None:
    scheduler = make_scheduler(tiny_model_dir, max_num_seqs=2, max_num_batched_tokens=32)
    scheduler.add_request(make_request("long", prompt_tokens=100, max_tokens=3))
    step(scheduler)
    assert scheduler.fair_policy.snapshot()["acme"]["input_tokens"] == 100
    assert scheduler.meter.get("long").usage.prompt_tokens == 32
    run_steps(scheduler)
    assert scheduler.fair_policy.snapshot()["acme"]["input_tokens"] == 100


def test_a_preempted_request_counts_its_preemption_and_is_not_billed_twice_for_its_prompt(
    tiny_model_dir: Path,
) -> None:
    # 11 usable blocks of 16 tokens; three 32-token prompts growing to 96 tokens cannot all fit.
    scheduler = make_scheduler(tiny_model_dir, num_blocks=12, max_num_seqs=3)
    add_all(scheduler, make_requests(3, tenant="acme", prompt_tokens=32, max_tokens=64))
    run_steps(scheduler)

    records = {u.request_id: u for u in scheduler.usage_log}
    preempted = [u for u in records.values() if u.preemptions >= 1]
    assert preempted, "the KV cache was meant to be too small for all three"
    for usage in preempted:
        assert usage.prompt_tokens >= 2 * usage.num_prompt_tokens  # computed again
        assert usage.output_tokens == 64
    assert scheduler.fair_policy.snapshot()["acme"]["input_tokens"] == 3 * 32
    assert totals_by_tenant(scheduler.usage_log) == policy_totals(scheduler)
    assert len(scheduler.usage_log) == 3


def test_an_aborted_request_is_reported_once_as_aborted_with_its_partial_usage(
    tiny_model_dir: Path,
) -> None:
    scheduler = make_scheduler(tiny_model_dir, max_num_seqs=1)
    running, waiting = make_request("running", max_tokens=50), make_request("waiting")
    add_all(scheduler, [running, waiting])
    for _ in range(6):
        step(scheduler)

    aborted = scheduler.finish_requests(["running", "waiting"], RequestStatus.FINISHED_ABORTED)
    scheduler.finish_requests(["running", "waiting"], RequestStatus.FINISHED_ABORTED)
    run_steps(scheduler)

    assert {r.request_id for r in aborted} == {"running", "waiting"}
    records = {u.request_id: u for u in scheduler.usage_log}
    assert len(scheduler.usage_log) == 2
    assert records["running"].status is UsageStatus.ABORTED
    assert records["running"].prompt_tokens == 32
    assert records["running"].output_tokens == 6
    assert records["running"].kv_block_steps > 0
    assert records["waiting"].status is UsageStatus.ABORTED
    assert (records["waiting"].prompt_tokens, records["waiting"].output_tokens) == (0, 0)
    assert scheduler.fair_policy.snapshot()["acme"]["num_finished"] == 2
    assert len(scheduler.waiting) == 0 and not scheduler.running


def test_prefix_cache_hits_show_as_cached_tokens_and_are_not_billed(tiny_model_dir: Path) -> None:
    scheduler = make_scheduler(tiny_model_dir, enable_prefix_caching=True)
    prompt = list(range(11, 75))  # 64 tokens, four blocks
    scheduler.add_request(make_request("first", prompt_token_ids=prompt, hashed=True))
    run_steps(scheduler)
    scheduler.add_request(make_request("second", prompt_token_ids=prompt, hashed=True))
    run_steps(scheduler)

    records = {u.request_id: u for u in scheduler.usage_log}
    # A hit stops one token short of the prompt, at a block boundary: three blocks.
    assert records["first"].cached_tokens == 0
    assert records["second"].cached_tokens == 48
    assert records["second"].prompt_tokens == 16
    assert scheduler.fair_policy.snapshot()["acme"]["input_tokens"] == 64 + 16


def test_kv_memory_is_integrated_over_steps_and_time(tiny_model_dir: Path) -> None:
    scheduler = make_scheduler(tiny_model_dir)
    scheduler.add_request(make_request("solo", prompt_tokens=40, max_tokens=30))
    num_busy_steps = 0
    while scheduler.has_requests():
        num_busy_steps += step(scheduler, seconds=0.5).total_num_scheduled_tokens > 0

    (usage,) = scheduler.usage_log
    assert usage.peak_blocks == 5  # 40 + 30 tokens in blocks of 16
    # Blocks held at each step count until the next one; the last step ends it.
    assert usage.kv_block_seconds == pytest.approx((usage.kv_block_steps - 5) * 0.5)
    bytes_per_block = BLOCK_SIZE * NUM_KV_HEADS * 2 * HEAD_SIZE * 4 * NUM_LAYERS
    assert scheduler.meter.blocks.bytes_per_block == [bytes_per_block]
    assert usage.kv_gib_seconds == pytest.approx(usage.kv_block_seconds * bytes_per_block / GIB)
    assert num_busy_steps == 30  # the prefill samples the first of 30 tokens


def test_queue_time_runs_from_arrival_to_first_admission(tiny_model_dir: Path) -> None:
    scheduler = make_scheduler(tiny_model_dir, max_num_seqs=1)
    add_all(scheduler, [make_request("first", max_tokens=4), make_request("second")])
    run_steps(scheduler, seconds=0.25)
    records = {u.request_id: u for u in scheduler.usage_log}
    assert records["first"].queue_s == 0.0
    assert records["second"].queue_s == pytest.approx(4 * 0.25)


def test_the_tenant_and_app_come_from_extra_args_and_default_to_default(
    tiny_model_dir: Path,
) -> None:
    scheduler = make_scheduler(tiny_model_dir)
    add_all(
        scheduler,
        [
            make_request("acme-req", tenant="acme", app="search"),
            make_request("anon", tenant=None),
            make_request("tenant-in-id-only-globex", tenant=None),
        ],
    )
    run_steps(scheduler)
    records = {u.request_id: (u.tenant, u.app) for u in scheduler.usage_log}
    assert records == {
        "acme-req": ("acme", "search"),
        "anon": ("default", None),
        "tenant-in-id-only-globex": ("default", None),
    }
