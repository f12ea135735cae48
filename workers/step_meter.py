"""What each request costs inside vLLM: tokens computed, tokens produced, KV memory held.

`UsageMeter` follows every request from arrival to its end, charges the fair policy
step by step and builds the request's `SchedulerUsage`, handed to `report` exactly
once. `BlockCounter` reads the KV blocks a request holds from vLLM's cache manager.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from vllm.v1.core.kv_cache_manager import KVCacheManager
from vllm.v1.core.single_type_kv_cache_manager import FullAttentionManager
from vllm.v1.kv_cache_interface import KVCacheConfig
from vllm.v1.request import Request, RequestStatus

from scheduler_core import FairPolicy, Job
from workers.accounting import SchedulerUsage, UsageStatus
from workers.fair_request_queue import make_job, report_id_of

GIB = 1024**3


class BlockCounter:
    """Blocks (and bytes) of KV cache one request holds now, over all cache groups.

    A block of group g is one page of each of the group's layers, so it weighs
    `page_size_bytes * len(layer_names)` (see `KVCacheGroupSpec`, `AttentionSpec`).
    Null blocks (slots a sliding window gave back) are not counted; a prefix block
    shared by several requests counts for each of them, since each holds it.
    """

    def __init__(self, kv_cache_manager: KVCacheManager, kv_cache_config: KVCacheConfig) -> None:
        groups = kv_cache_config.kv_cache_groups
        self._managers = [
            (
                manager.req_to_blocks,
                type(manager) is not FullAttentionManager,  # only these can hold null blocks
                groups[manager.kv_cache_group_id].kv_cache_spec.page_size_bytes
                * len(groups[manager.kv_cache_group_id].layer_names),
            )
            for manager in kv_cache_manager.coordinator.single_type_managers
        ]

    @property
    def bytes_per_block(self) -> list[int]:
        return [num_bytes for _, _, num_bytes in self._managers]

    def held(self, request_id: str) -> tuple[int, int]:
        """(blocks, bytes) held by `request_id`; (0, 0) for an unknown id."""
        num_blocks = num_bytes = 0
        for req_to_blocks, may_hold_null, block_bytes in self._managers:
            blocks = req_to_blocks.get(request_id)  # .get: it is a defaultdict
            if not blocks:
                continue
            count = sum(not b.is_null for b in blocks) if may_hold_null else len(blocks)
            num_blocks += count
            num_bytes += count * block_bytes
        return num_blocks, num_bytes


@dataclass(slots=True, eq=False)
class Tracked:
    """One live request: its jobs, its usage so far, and what it holds now.

    `billed` is the job the policy is charged for: the prompt less the tokens the
    prefix cache served at first admission, so cache hits are never billed as work.
    """

    request: Request
    job: Job
    billed: Job
    usage: SchedulerUsage
    arrival_s: float
    admitted: bool = False
    running: bool = False
    rejected: bool = False
    num_blocks: int = 0
    num_bytes: int = 0
    kv_mark_s: float = 0.0
    num_outputs_seen: int = 0


def usage_status(status: RequestStatus) -> UsageStatus:
    if status == RequestStatus.FINISHED_ABORTED:
        return UsageStatus.ABORTED
    if status in (RequestStatus.FINISHED_ERROR, RequestStatus.FINISHED_IGNORED):
        return UsageStatus.ERROR  # failed, or refused (prompt longer than the model)
    return UsageStatus.FINISHED


def prompt_tokens_in(request: Request, num_scheduled: int) -> int:
    """Prompt tokens computed by the step that just scheduled `num_scheduled` tokens.

    `Scheduler.schedule()` has already added them to `num_computed_tokens`, so the step
    covered `[num_computed_tokens - num_scheduled, num_computed_tokens)`; the part
    below `num_prompt_tokens` is prompt (the rest is decoding or recomputed output).
    """
    end = request.num_computed_tokens
    start = end - num_scheduled
    num_prompt = request.num_prompt_tokens
    return max(0, min(end, num_prompt) - min(start, num_prompt))


class UsageMeter:
    """Charges the policy each step and reports each request's usage once."""

    def __init__(
        self,
        policy: FairPolicy,
        blocks: BlockCounter,
        report: Callable[[SchedulerUsage], None],
    ) -> None:
        self.policy = policy
        self.blocks = blocks
        self._report = report
        self._tracked: dict[str, Tracked] = {}

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._tracked

    def __len__(self) -> int:
        return len(self._tracked)

    def get(self, request_id: str) -> Tracked | None:
        return self._tracked.get(request_id)

    def live_usage(self) -> list[SchedulerUsage]:
        """Usage so far of the requests not yet ended (for dashboards and tests)."""
        return [tracked.usage for tracked in self._tracked.values()]

    def track(self, request: Request, now: float) -> Tracked:
        """The request's record, created on first sight (its arrival)."""
        tracked = self._tracked.get(request.request_id)
        if tracked is None:
            job = make_job(request, now)
            usage = SchedulerUsage(
                report_id_of(request), job.tenant, job.app, num_prompt_tokens=job.prompt_tokens
            )
            tracked = self._tracked[request.request_id] = Tracked(request, job, job, usage, now)
        return tracked

    def job_of(self, request: Request, now: float) -> Job:
        return self.track(request, now).job

    # -- lifecycle ---------------------------------------------------------------

    def admit(self, request: Request, now: float, *, num_cached: int) -> None:
        """The request entered the running batch (`num_cached`: prefix-cache hits)."""
        tracked = self.track(request, now)
        if not tracked.admitted:
            num_prompt = tracked.job.prompt_tokens
            cached = max(0, min(num_cached, num_prompt))
            tracked.usage.cached_tokens = cached
            tracked.usage.queue_s = max(0.0, now - tracked.arrival_s)
            # A Job bills at least one prompt token; vLLM always computes the last one
            # itself (a local hit stops at num_tokens - 1) unless a remote prefill did.
            tracked.billed = dataclasses.replace(
                tracked.job, prompt_tokens=max(1, num_prompt - cached)
            )
            tracked.admitted = True
        tracked.running = True
        tracked.kv_mark_s = now
        self.policy.on_admit(tracked.billed, now)  # bills nothing on re-admission

    def on_step(
        self, num_scheduled_tokens: Mapping[str, int], running: Iterable[Request], now: float
    ) -> None:
        """After `schedule()`: charge this step's prompt tokens and the KV held by the batch."""
        new_input: dict[str, int] = {}
        for request_id, num_scheduled in num_scheduled_tokens.items():
            tracked = self._tracked.get(request_id)
            if tracked is None:
                continue
            request = tracked.request
            if not tracked.running:  # admitted from vLLM's KV-holding queue
                start = request.num_computed_tokens - num_scheduled
                self.admit(request, now, num_cached=start)
            num_prompt = prompt_tokens_in(request, num_scheduled)
            tracked.usage.prompt_tokens += num_prompt
            new_input[request_id] = num_prompt
        for request in running:
            tracked = self._tracked.get(request.request_id)
            if tracked is not None and tracked.running:
                self._hold(tracked, now, new_input.get(request.request_id, 0))

    def settle_outputs(self, request_ids: Iterable[str]) -> None:
        """After `update_from_output()`: charge the output tokens produced."""
        for request_id in request_ids:
            tracked = self._tracked.get(request_id)
            if tracked is not None:
                self._settle_output(tracked)

    def preempt(self, request: Request, now: float) -> None:
        tracked = self._tracked.get(request.request_id)
        if tracked is None:
            return
        self._accrue(tracked, now)
        tracked.num_blocks = tracked.num_bytes = 0
        tracked.running = False
        tracked.usage.preemptions += 1

    def reject(self, request: Request) -> None:
        """The policy refused the request on arrival: it ends unserved, not billed."""
        tracked = self._tracked.get(request.request_id)
        if tracked is not None:
            tracked.rejected = True

    def finish(self, request: Request, now: float) -> SchedulerUsage | None:
        """The request ended: close its books and report it; None if already reported."""
        tracked = self._tracked.pop(request.request_id, None)
        if tracked is None:
            return None
        self._accrue(tracked, now)
        self._settle_output(tracked)
        usage = tracked.usage
        usage.status = usage_status(request.status)
        if not tracked.rejected:  # the policy's contract: on_finish per accepted request
            self.policy.on_finish(tracked.billed, now)
        self._report(usage)
        return usage

    # -- internals ---------------------------------------------------------------

    def _hold(self, tracked: Tracked, now: float, num_input: int) -> None:
        self._accrue(tracked, now)
        num_blocks, num_bytes = self.blocks.held(tracked.job.request_id)
        tracked.num_blocks, tracked.num_bytes = num_blocks, num_bytes
        usage = tracked.usage
        usage.kv_block_steps += num_blocks
        usage.peak_blocks = max(usage.peak_blocks, num_blocks)
        if num_input or num_blocks:
            self.policy.charge(tracked.billed, num_input, 0, num_blocks)

    def _accrue(self, tracked: Tracked, now: float) -> None:
        """Integrate the blocks held since the last mark over wall time."""
        elapsed = max(0.0, now - tracked.kv_mark_s)
        tracked.usage.kv_block_seconds += tracked.num_blocks * elapsed
        tracked.usage.kv_gib_seconds += tracked.num_bytes * elapsed / GIB
        tracked.kv_mark_s = now

    def _settle_output(self, tracked: Tracked) -> None:
        # num_output_tokens survives preemption (outputs are kept, their KV recomputed);
        # it restarts from 0 only when a streaming-input session takes its next chunk.
        num_outputs = tracked.request.num_output_tokens
        seen = tracked.num_outputs_seen
        num_new = num_outputs - seen if num_outputs >= seen else num_outputs
        tracked.num_outputs_seen = num_outputs
        if num_new > 0:
            tracked.usage.output_tokens += num_new
            self.policy.charge(tracked.billed, 0, num_new, 0)
