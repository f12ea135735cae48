"""What each request costs inside vLLM: tokens computed, tokens produced, KV memory held.

`UsageMeter` follows every request from arrival to its end, charges the fair policy
once per step (`FairPolicy.charge_step`) and builds the request's `SchedulerUsage`,
handed to `report` exactly once. KV memory is metered by `workers.kv_meter`.

The meter runs inside every engine step, so its per-step work is kept to what changed:
one pass over the scheduled requests for their new output tokens (vLLM makes the same
pass), prompt progress only for the requests still prefilling, and KV memory only for
the requests that were given new blocks this step (vLLM lists them in the scheduler
output). The KV memory a request held is worked out when it gives its blocks back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.request import Request, RequestStatus

from scheduler_core import Charge, FairPolicy, Job
from usage.records import SchedulerUsage, UsageStatus
from workers.fair_request_queue import make_job, report_id_of
from workers.kv_meter import BlockCounter, Holding


@dataclass(slots=True, eq=False)
class Tracked:
    """One live request: its jobs, its usage so far, and what it holds now.

    `billed` is the job the policy is charged for: the prompt less the tokens the
    prefix cache served at first admission, so cache hits are never billed as work.
    `holding` is the KV memory it holds in this stay in the batch (not yet in `usage`);
    `prompt_mark` is how far the prompt had been computed when last looked at.
    """

    request: Request
    job: Job
    billed: Job
    usage: SchedulerUsage
    arrival_s: float
    admitted: bool = False
    running: bool = False
    rejected: bool = False
    tenant: str = ""  # the job's, at hand: the per-step loop touches no Job
    holding: Holding = dataclasses.field(default_factory=Holding)
    kv_block_steps_charged: int = 0
    num_outputs_seen: int = 0
    prompt_mark: int = 0


def usage_status(status: RequestStatus) -> UsageStatus:
    if status == RequestStatus.FINISHED_ABORTED:
        return UsageStatus.ABORTED
    if status in (RequestStatus.FINISHED_ERROR, RequestStatus.FINISHED_IGNORED):
        return UsageStatus.ERROR  # failed, or refused (prompt longer than the model)
    return UsageStatus.FINISHED


class UsageMeter:
    """Charges the policy each step and reports each request's usage once.

    Steps are counted by `on_step` (one per `schedule()`): a request holding blocks
    after step s's schedule is charged for step s, as vLLM's model runs step s with them.
    The policy hears of a request's KV block-steps when it gives its blocks back (they
    order nothing; its tokens are charged as they are computed).
    """

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
        self._prefilling: dict[str, Tracked] = {}
        self._num_steps = 0

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._tracked

    def __len__(self) -> int:
        return len(self._tracked)

    def get(self, request_id: str) -> Tracked | None:
        return self._tracked.get(request_id)

    def live_usage(self, now: float) -> list[SchedulerUsage]:
        """Usage so far of the requests not yet ended (for dashboards and tests): each
        with what it holds now billed through the last step."""
        live = []
        for tracked in self._tracked.values():
            block_steps, block_seconds, gib_seconds = tracked.holding.cost(self._num_steps, now)
            live.append(
                dataclasses.replace(
                    tracked.usage,
                    kv_block_steps=tracked.usage.kv_block_steps + block_steps,
                    kv_block_seconds=tracked.usage.kv_block_seconds + block_seconds,
                    kv_gib_seconds=tracked.usage.kv_gib_seconds + gib_seconds,
                )
            )
        return live

    def track(self, request: Request, now: float) -> Tracked:
        """The request's record, created on first sight (its arrival)."""
        tracked = self._tracked.get(request.request_id)
        if tracked is None:
            job = make_job(request, now)
            usage = SchedulerUsage(
                report_id_of(request), job.tenant, job.app, num_prompt_tokens=job.prompt_tokens
            )
            tracked = Tracked(request, job, job, usage, now, tenant=job.tenant)
            self._tracked[request.request_id] = tracked
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
            if cached:
                tracked.billed = dataclasses.replace(
                    tracked.job, prompt_tokens=max(1, num_prompt - cached)
                )
            tracked.admitted = True
        tracked.running = True
        tracked.holding = Holding()
        self.policy.on_admit(tracked.billed, now)  # bills nothing on re-admission

    def on_step(self, output: SchedulerOutput, running: Iterable[Request], now: float) -> None:
        """After `schedule()`: note who entered the batch, the prompt tokens computed and
        the blocks that changed hands; charge the policy once."""
        self._num_steps += 1
        step = self._num_steps
        charges: list[Charge] = []
        scheduled = output.num_scheduled_tokens
        cached = output.scheduled_cached_reqs
        tracked_by_id = self._tracked
        for new in output.scheduled_new_reqs:
            self._enter(new.req_id, scheduled[new.req_id], now)
        resumed = cached.resumed_req_ids
        for request_id in resumed:
            self._enter(request_id, scheduled[request_id], now)
        if self.blocks.changes_only_on_allocation:
            bytes_per_block = self.blocks.bytes_per_block
            for request_id, new_blocks in zip(cached.req_ids, cached.new_block_ids, strict=True):
                if new_blocks is None or request_id in resumed:
                    continue  # no new blocks, or all its blocks counted on entering
                tracked = tracked_by_id.get(request_id)
                if tracked is not None and tracked.running:
                    num_blocks = num_bytes = 0
                    for ids, block_bytes in zip(new_blocks, bytes_per_block, strict=True):
                        num_blocks += len(ids)
                        num_bytes += len(ids) * block_bytes
                    self._hold_more(tracked, num_blocks, num_bytes, step, now)
        else:
            for request in running:
                tracked = tracked_by_id.get(request.request_id)
                if tracked is not None and tracked.running:
                    self._recount(tracked, now)
        if self._prefilling:
            self._prompt_progress(charges)
        if charges:
            self.policy.charge_step(charges)

    def settle_outputs(self, request_ids: Iterable[str]) -> None:
        """After `update_from_output()`: charge the output tokens produced, in one call.

        `num_output_tokens` survives preemption (outputs are kept, their KV recomputed);
        it restarts from 0 only when a streaming-input session takes its next chunk.
        """
        tracked_by_id = self._tracked
        if self.policy.charges_by_tenant:  # the policy applies them when it reads them
            outputs = self.policy.unbilled_outputs
            for request_id in request_ids:  # _new_outputs, inlined: this loop is hot
                tracked = tracked_by_id.get(request_id)
                if tracked is None:
                    continue  # finished in this update: `finish` settled it
                num_outputs = tracked.request.num_output_tokens
                seen = tracked.num_outputs_seen
                if num_outputs != seen:
                    num_new = num_outputs - seen if num_outputs > seen else num_outputs
                    tracked.num_outputs_seen = num_outputs
                    tracked.usage.output_tokens += num_new
                    tenant = tracked.tenant
                    outputs[tenant] = outputs.get(tenant, 0) + num_new
            return
        charges: list[Charge] = []
        for request_id in request_ids:
            tracked = tracked_by_id.get(request_id)
            if tracked is not None and (num_new := self._new_outputs(tracked)):
                charges.append((tracked.billed, 0, num_new, 0))
        if charges:
            self.policy.charge_step(charges)

    @staticmethod
    def _new_outputs(tracked: Tracked) -> int:
        """Output tokens produced since it was last looked at (and counted in its usage)."""
        num_outputs = tracked.request.num_output_tokens
        seen = tracked.num_outputs_seen
        if num_outputs == seen:
            return 0
        num_new = num_outputs - seen if num_outputs > seen else num_outputs
        tracked.num_outputs_seen = num_outputs
        tracked.usage.output_tokens += num_new
        return num_new

    def preempt(self, request: Request, now: float) -> None:
        tracked = self._tracked.get(request.request_id)
        if tracked is None:
            return
        charges: list[Charge] = []
        self._release(tracked, now, charges)
        self.policy.charge_step(charges)
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
        charges: list[Charge] = []
        self._release(tracked, now, charges)
        self._settle_output(tracked, charges)
        if charges:
            self.policy.charge_step(charges)
        usage = tracked.usage
        usage.status = usage_status(request.status)
        if not tracked.rejected:  # the policy's contract: on_finish per accepted request
            self.policy.on_finish(tracked.billed, now)
        self._report(usage)
        return usage

    # -- internals ---------------------------------------------------------------

    def _enter(self, request_id: str, num_scheduled: int, now: float) -> None:
        """A request scheduled for the first time since its admission (new or resumed)."""
        tracked = self._tracked.get(request_id)
        if tracked is None:
            return
        request = tracked.request
        start = request.num_computed_tokens - num_scheduled  # what the cache spared it
        if not tracked.running:  # admitted from vLLM's KV-holding queue
            self.admit(request, now, num_cached=start)
        tracked.prompt_mark = start
        if start < request.num_prompt_tokens:
            self._prefilling[request_id] = tracked
        self._recount(tracked, now)

    def _prompt_progress(self, charges: list[Charge]) -> None:
        """Prompt tokens computed since the last step by the requests still prefilling."""
        for request_id, tracked in list(self._prefilling.items()):
            request = tracked.request
            num_prompt = request.num_prompt_tokens
            done = min(request.num_computed_tokens, num_prompt)
            if done > tracked.prompt_mark:
                tracked.usage.prompt_tokens += done - tracked.prompt_mark
                charges.append((tracked.billed, done - tracked.prompt_mark, 0, 0))
                tracked.prompt_mark = done
            if done >= num_prompt or not tracked.running:
                del self._prefilling[request_id]

    def _hold_more(
        self, tracked: Tracked, num_blocks: int, num_bytes: int, step: int, now: float
    ) -> None:
        holding = tracked.holding
        holding.add(num_blocks, num_bytes, step, now)
        if holding.num_blocks > tracked.usage.peak_blocks:
            tracked.usage.peak_blocks = holding.num_blocks

    def _recount(self, tracked: Tracked, now: float) -> None:
        """Read what it holds now (all its blocks, on entering; or after a sliding window
        may have given some back): bill what it held up to the step before, then hold
        the count from this step on."""
        self._bill_holding(tracked, self._num_steps - 1, now)
        num_blocks, num_bytes = self.blocks.held(tracked.job.request_id)
        self._hold_more(tracked, num_blocks, num_bytes, self._num_steps, now)

    def _release(self, tracked: Tracked, now: float, charges: list[Charge]) -> None:
        """It gives its blocks back (preempted or ended): bill them through the last step,
        and tell the policy of its KV memory in this stay."""
        self._bill_holding(tracked, self._num_steps, now)
        self._prefilling.pop(tracked.job.request_id, None)
        uncharged = tracked.usage.kv_block_steps - tracked.kv_block_steps_charged
        if uncharged > 0:
            charges.append((tracked.billed, 0, 0, uncharged))
            tracked.kv_block_steps_charged += uncharged

    def _bill_holding(self, tracked: Tracked, last_step: int, now: float) -> None:
        """Move what it holds into its usage, through `last_step`; it then holds nothing."""
        block_steps, block_seconds, gib_seconds = tracked.holding.cost(last_step, now)
        usage = tracked.usage
        usage.kv_block_steps += block_steps
        usage.kv_block_seconds += block_seconds
        usage.kv_gib_seconds += gib_seconds
        tracked.holding = Holding()

    def _settle_output(self, tracked: Tracked, charges: list[Charge]) -> None:
        num_new = self._new_outputs(tracked)
        if not num_new:
            return
        if self.policy.charges_by_tenant:
            outputs = self.policy.unbilled_outputs
            outputs[tracked.tenant] = outputs.get(tracked.tenant, 0) + num_new
        else:
            charges.append((tracked.billed, 0, num_new, 0))
