"""Differential tests: Parity's fair schedulers against vLLM's own, step for step.

With one tenant a fair policy has nobody to be fair between, so `FairScheduler` must take
exactly the decisions of vLLM's `Scheduler`, and its asynchronous variant those of vLLM's
`AsyncScheduler`: the same requests scheduled for the same tokens, preempted and finished
at the same steps, through chunked prefills, a KV cache too small for the batch, arrivals
mid-run and aborts. Both end with every block free and every request answered once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus

from tests.workers.vllm_factories import (
    Stepper,
    make_request,
    make_scheduler,
    make_vllm_scheduler,
)
from usage.records import UsageStatus

# 24 blocks of 16 tokens for up to 6 requests of up to 150 tokens: some are preempted.
CONFIG = {"num_blocks": 24, "max_num_seqs": 6, "max_num_batched_tokens": 64}
NUM_REQUESTS = 30


@dataclass(frozen=True, slots=True)
class Arrival:
    step: int
    request_id: str
    prompt_tokens: int
    max_tokens: int


def workload(seed: int = 7) -> list[Arrival]:
    """Requests of varied lengths, half at the start and the rest over 40 steps."""
    rng = random.Random(seed)
    return [
        Arrival(
            0 if i < NUM_REQUESTS // 2 else rng.randrange(1, 40),
            f"r{i}",
            rng.randrange(8, 90),
            rng.randrange(1, 60),
        )
        for i in range(NUM_REQUESTS)
    ]


# Aborted by their client at these steps: one still waiting, one running by then.
ABORTS = {3: "r14", 12: "r1"}


def decisions(output: Any, engine_outputs: dict[int, Any]) -> dict[str, Any]:
    cached = output.scheduled_cached_reqs
    return {
        "new": [new.req_id for new in output.scheduled_new_reqs],
        "cached": list(cached.req_ids),
        "resumed": sorted(cached.resumed_req_ids),
        "tokens": dict(output.num_scheduled_tokens),
        "preempted": sorted(output.preempted_req_ids or ()),
        "finished": {
            o.request_id: o.finish_reason
            for eo in engine_outputs.values()
            for o in eo.outputs
            if o.finish_reason is not None
        },
    }


def run(scheduler: Scheduler, arrivals: list[Arrival]) -> list[dict[str, Any]]:
    """Every step's decisions until all requests are answered."""
    stepper = Stepper(scheduler)
    trace = []
    for step in range(2_000):
        for arrival in arrivals:
            if arrival.step == step:
                scheduler.add_request(request_of(arrival))
        if step in ABORTS:
            scheduler.finish_requests(ABORTS[step], RequestStatus.FINISHED_ABORTED)
        if step > max(a.step for a in arrivals) and stepper.done():
            return trace
        trace.append(decisions(*stepper.step()))
    raise AssertionError("the scheduler never emptied")


def request_of(arrival: Arrival) -> Request:
    return make_request(
        arrival.request_id, prompt_tokens=arrival.prompt_tokens, max_tokens=arrival.max_tokens
    )


def free_blocks(scheduler: Scheduler) -> int:
    return scheduler.kv_cache_manager.block_pool.get_num_free_blocks()


@pytest.mark.parametrize("vllm_cls", [Scheduler, AsyncScheduler], ids=["sync", "async"])
def test_with_one_tenant_the_fair_scheduler_decides_exactly_as_vllms_own(
    tiny_model_dir: Path, vllm_cls: type[Scheduler]
) -> None:
    asynchronous = vllm_cls is AsyncScheduler
    arrivals = workload()
    theirs = make_vllm_scheduler(vllm_cls, tiny_model_dir, async_scheduling=asynchronous, **CONFIG)
    ours = make_scheduler(tiny_model_dir, async_scheduling=asynchronous, **CONFIG)
    assert isinstance(ours, vllm_cls)

    expected, actual = run(theirs, arrivals), run(ours, arrivals)

    assert any(step["resumed"] for step in expected), "the cache was meant to be too small"
    assert any(len(step["tokens"]) > 1 and step["new"] for step in expected)
    for number, (want, got) in enumerate(zip(expected, actual, strict=True)):
        assert got == want, f"step {number} differs"
    assert free_blocks(ours) == free_blocks(theirs) == CONFIG["num_blocks"] - 1


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_every_request_is_answered_and_billed_once_with_its_blocks_given_back(
    tiny_model_dir: Path, asynchronous: bool
) -> None:
    arrivals = workload(seed=11)
    scheduler = make_scheduler(tiny_model_dir, async_scheduling=asynchronous, **CONFIG)

    trace = run(scheduler, arrivals)

    # An abort is answered by whoever asked for it; every other request by the engine.
    answered = [rid for step in trace for rid in step["finished"]]
    assert sorted(answered + list(ABORTS.values())) == sorted(a.request_id for a in arrivals)
    records = {usage.request_id: usage for usage in scheduler.usage_log}
    assert sorted(records) == sorted(a.request_id for a in arrivals)
    assert len(scheduler.usage_log) == len(records)
    aborted = {rid for rid, usage in records.items() if usage.status == UsageStatus.ABORTED}
    assert aborted == set(ABORTS.values())
    for arrival in arrivals:
        if arrival.request_id not in aborted:
            assert records[arrival.request_id].output_tokens == arrival.max_tokens
    assert free_blocks(scheduler) == CONFIG["num_blocks"] - 1
    assert not scheduler.requests and len(scheduler.meter) == 0
