"""The usage row a worker builds from what the stream showed and the scheduler measured."""

from __future__ import annotations

import time
from typing import Any

from usage.records import SchedulerUsage, UsageStatus
from wire.protocol import GenerationRequest, RequestKind
from workers.progress import Progress, build_usage


def make_request(**overrides: Any) -> GenerationRequest:
    fields: dict[str, Any] = {
        "request_id": "chatcmpl-1",
        "kind": RequestKind.CHAT,
        "tenant": "acme",
        "tenant_id": 1,
        "api_key_id": 7,
        "model": "parity-tiny",
        "max_tokens": 16,
        "received_at": time.time() - 1.0,
        "messages": [{"role": "user", "content": "hi"}],
        **overrides,
    }
    return GenerationRequest(**fields)


def make_report(**overrides: Any) -> SchedulerUsage:
    fields: dict[str, Any] = {
        "request_id": "chatcmpl-1",
        "tenant": "acme",
        "prompt_tokens": 12,
        "cached_tokens": 4,
        "output_tokens": 5,
        "kv_block_seconds": 0.5,
        "kv_gib_seconds": 0.001,
        "peak_blocks": 2,
        "preemptions": 1,
        "queue_s": 0.25,
        **overrides,
    }
    return SchedulerUsage(**fields)


def test_a_served_request_bills_its_prompt_once_and_every_token_the_client_got() -> None:
    progress = Progress(num_output_tokens=5, first_token_at=time.time(), finish_reason="stop")

    usage = build_usage(
        make_request(), 10, progress, make_report(), UsageStatus.FINISHED, "parity-tiny"
    )

    # The scheduler computed 12 prompt tokens (a preemption recomputed some): billed 10.
    assert (usage.prompt_tokens, usage.cached_tokens, usage.output_tokens) == (10, 4, 5)
    assert (usage.peak_blocks, usage.preemptions, usage.queue_s) == (2, 1, 0.25)
    assert usage.ttft_s is not None and 0 < usage.ttft_s <= usage.latency_s


def test_a_request_aborted_before_the_engine_started_on_it_bills_nothing() -> None:
    report = make_report(prompt_tokens=0, cached_tokens=0, output_tokens=0)

    usage = build_usage(make_request(), 10, Progress(), report, UsageStatus.ABORTED, "m")

    assert (usage.prompt_tokens, usage.output_tokens, usage.ttft_s) == (0, 0, None)
    assert usage.status is UsageStatus.ABORTED


def test_without_a_scheduler_report_tokens_are_still_billed_but_no_kv_time() -> None:
    progress = Progress(num_output_tokens=3, first_token_at=time.time(), num_cached_tokens=2)

    usage = build_usage(make_request(), 10, progress, None, UsageStatus.FINISHED, "m")

    assert (usage.prompt_tokens, usage.cached_tokens, usage.output_tokens) == (10, 2, 3)
    assert usage.kv_gib_seconds == 0.0
