"""One request's progress as its stream showed it, and the usage row built from it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from usage.records import RequestUsage, SchedulerUsage, UsageStatus
from wire.protocol import GenerationRequest


def engine_error_status(exc: Exception) -> tuple[int, str]:
    """vLLM's validation errors are the client's (400); anything else is ours (503)."""
    from vllm.exceptions import VLLMClientError

    if isinstance(exc, VLLMClientError | ValueError):
        return 400, "invalid_request"
    return 503, "engine_unavailable"


@dataclass(slots=True)
class Progress:
    """What the stream showed of one request."""

    num_output_tokens: int = 0
    first_token_at: float | None = None
    finish_reason: str = "abort"  # until the engine says otherwise
    num_cached_tokens: int = 0
    pieces: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def absorb(self, output: Any) -> None:
        completion = output.outputs[0]
        self.pieces.append(completion.text)
        if completion.token_ids:
            if self.first_token_at is None:
                self.first_token_at = time.time()
            self.num_output_tokens += len(completion.token_ids)
        if output.finished:
            self.finish_reason = completion.finish_reason or "stop"
            self.num_cached_tokens = output.num_cached_tokens or 0


def build_usage(
    request: GenerationRequest,
    num_prompt: int,
    progress: Progress,
    report: SchedulerUsage | None,
    status: UsageStatus,
    model: str,
) -> RequestUsage:
    """The billed usage: each prompt token once if the engine started on it, every token
    the client received, and the KV memory-time the scheduler measured."""
    started = progress.num_output_tokens > 0 or (
        report is not None and (report.prompt_tokens > 0 or report.cached_tokens > 0)
    )
    prompt_tokens = num_prompt if started else 0
    cached = report.cached_tokens if report else progress.num_cached_tokens
    now = time.time()
    first = progress.first_token_at
    return RequestUsage(
        request_id=request.request_id,
        tenant=request.tenant,
        tenant_id=request.tenant_id,
        api_key_id=request.api_key_id,
        model=model,
        app=request.app,
        prompt_tokens=prompt_tokens,
        cached_tokens=min(cached, prompt_tokens),
        output_tokens=progress.num_output_tokens,
        kv_block_seconds=report.kv_block_seconds if report else 0.0,
        kv_gib_seconds=report.kv_gib_seconds if report else 0.0,
        peak_blocks=report.peak_blocks if report else 0,
        preemptions=report.preemptions if report else 0,
        queue_s=report.queue_s if report else 0.0,
        ttft_s=None if first is None else max(0.0, first - request.received_at),
        latency_s=max(0.0, now - request.received_at),
        status=status,
        finished_at=now,
    )
