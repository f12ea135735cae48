"""`FairScheduler`: vLLM 0.32's V1 scheduler with a fair waiting queue and per-tenant metering.

Drop-in for any vLLM 0.32 deployment: `--scheduler-cls workers.vllm_scheduler.FairScheduler`
(or `LLM(..., scheduler_cls=...)`). Where vLLM schedules asynchronously (its default on
GPUs) the same name builds `FairAsyncScheduler`, the same machinery on vLLM's
`AsyncScheduler`. With no configuration it runs VTC with every tenant at weight 1; see
`workers.scheduler_settings` for `PARITY_POLICY`, `PARITY_WEIGHTS` and
`PARITY_WEIGHTS_FILE`. Importing this module needs neither Django nor Parity settings:
vLLM imports it in the engine-core process it spawns.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.request_queue import RequestQueue, SchedulingPolicy
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs, FinishReason
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import Request, RequestStatus

from scheduler_core import make_policy
from usage.records import SchedulerUsage
from workers.control import ADDRESS_ENV, ControlClient
from workers.fair_request_queue import FairRequestQueue, tenant_of
from workers.kv_meter import BlockCounter
from workers.lifeline import die_with_host
from workers.scheduler_settings import SchedulerSettings, WeightsFileWatcher, check_weight
from workers.step_meter import UsageMeter

logger = logging.getLogger(__name__)

_ADMITTABLE = (RequestStatus.WAITING, RequestStatus.PREEMPTED)


def noting_queue(queue: RequestQueue, on_add: Callable[[Request], None]) -> RequestQueue:
    """An empty queue of `queue`'s kind that calls `on_add` with each request it takes."""
    if len(queue):
        raise ValueError("only an empty queue can be replaced")
    base = type(queue)

    class Noting(base):  # type: ignore[valid-type,misc]
        def add_request(self, request: Request) -> None:
            on_add(request)
            super().add_request(request)

    Noting.__name__ = f"Noting{base.__name__}"
    return Noting()  # type: ignore[no-any-return]


def seconds_since_start() -> Callable[[], float]:
    """A clock reading seconds since it was made (the policy's `now`)."""
    start = time.monotonic()
    return lambda: time.monotonic() - start


def connect_control() -> ControlClient | None:
    """The worker's control line when the environment names one; fails loudly if unreachable."""
    try:
        return ControlClient.from_env()
    except (OSError, EOFError) as error:
        message = f"{ADDRESS_ENV}: cannot reach the worker's control line: {error}"
        raise RuntimeError(message) from error


def _cache_hits(request: Request) -> int:
    # vLLM records a new request's prefix-cache hits (local + external) in
    # prefill_stats just before it admits it; num_computed_tokens is set only after pop.
    stats = request.prefill_stats
    return 0 if stats is None or request.num_preemptions else stats.num_cached_tokens


class FairScheduler(Scheduler):
    """vLLM's `Scheduler` whose waiting queue is ordered by a Parity `FairPolicy`.

    Hooks (all else is vLLM's own code):
    - `self.waiting` is a `FairRequestQueue`; a pop that admits a request (it now holds
      KV blocks and is still WAITING/PREEMPTED) calls `policy.on_admit` at once, so
      counters move between admissions within one step, as in the simulator.
    - `schedule()`: applies weights (control line, weights file), runs vLLM's schedule,
      then charges each running request the prompt tokens computed this step and the KV
      blocks it holds; publishes the live state about once a second.
    - `update_from_output()`: charges the output tokens produced.
    - `_preempt_request()`: the one place vLLM preempts (in schedule and in
      reset_prefix_cache); counts the preemption and stops the KV meter.
    - `_free_request()`: the one place every ending passes (finish_requests for aborts
      and errors, update_from_output for stops); reports the usage, guarded so each
      request is reported exactly once.

    `kv_holding_waiting` stays vLLM's FCFS queue. It holds only requests that already
    hold KV blocks (remote-KV loads of disaggregated prefill, streaming-input sessions);
    vLLM drains it first so that a block-holder never waits behind a request whose failed
    allocation stops the scan. Reordering it by tenant would only delay the release of
    memory already taken. Its requests are still metered: arrival, admission (when they
    enter `running`), per-step charges and finish are hooked on the scheduler, not on a
    queue. KV is metered for running requests only.

    With async scheduling on, `FairScheduler(...)` builds a `FairAsyncScheduler`: vLLM then
    schedules step n+1 before step n's output comes back, and output tokens are charged
    when they come back (one step later); `kv_block_steps` counts `schedule()` calls,
    one per model step either way.

    `clock` (seconds since start) and `wall_clock` (Unix time, for state timestamps) are
    attributes, so tests can move time. `on_usage` is called with every usage record.
    """

    kv_holding_waiting: RequestQueue  # vLLM's, typed here for the checker

    def __new__(cls, *args: Any, **kwargs: Any) -> FairScheduler:
        # vLLM resolves `scheduler_cls` to a class before it knows whether it will schedule
        # asynchronously, and the engine core then needs the matching scheduler.
        if cls is FairScheduler and _async_scheduling(*args, **kwargs):
            cls = FairAsyncScheduler
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        die_with_host()  # a no-op unless a Parity worker started this engine
        self.settings = SchedulerSettings.from_env()  # bad configuration fails before vLLM starts
        super().__init__(*args, **kwargs)
        self._clock: Callable[[], float] = seconds_since_start()
        self.wall_clock: Callable[[], float] = time.time
        self.on_usage: Callable[[SchedulerUsage], None] | None = None
        self.fair_policy = make_policy(self.settings.policy_name, weights=self.settings.weights)
        blocks = BlockCounter(self.kv_cache_manager, self.kv_cache_config)
        self.meter = UsageMeter(self.fair_policy, blocks, self._report)
        self.waiting: FairRequestQueue = FairRequestQueue(
            self.fair_policy, job_of=self.meter.job_of, clock=self.clock, on_pop=self._on_pop
        )
        # vLLM's own add_request is kept (the FairRequestQueue notes an arrival, the meter
        # and policy see it at the next schedule()); the queue of requests that already
        # hold KV blocks stays vLLM's, and tells the meter of each request it takes.
        self.kv_holding_waiting = noting_queue(self.kv_holding_waiting, self._kv_holder_arrived)
        self._rejected: list[Request] = []
        self._file_tenants: set[str] = set()
        self._last_state_s: float | None = None
        self._idle = True  # nothing running or waiting after the last step
        self._weights_applied_at: float | None = None
        self._watcher = None
        if self.settings.weights_file is not None:
            self._watcher = WeightsFileWatcher(self.settings.weights_file)
            self._poll_weights_file(self._now())
        self._warn_about_modes()
        self._control = connect_control()

    @property
    def clock(self) -> Callable[[], float]:
        """Seconds since start: the policy's `now` (tests put a manual clock here)."""
        return self._clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.waiting.clock = clock  # stamps arrivals without a call through the scheduler

    # -- vLLM's scheduler interface --------------------------------------------------

    def schedule(self, throttle_prefills: bool = False) -> SchedulerOutput:
        self._apply_control_messages()
        self._poll_weights_file(self._now())
        output = super().schedule(throttle_prefills)
        self._take_rejected()
        now = self._now()
        self.meter.on_step(output, self.running, now)
        self._maybe_publish_state(now)
        return output

    def update_from_output(
        self, scheduler_output: SchedulerOutput, model_runner_output: ModelRunnerOutput
    ) -> dict[int, EngineCoreOutputs]:
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        self.meter.settle_outputs(scheduler_output.num_scheduled_tokens)
        self._take_rejected()
        if self._rejected:
            self._finish_rejected(outputs)
        idle = not (self.running or self.waiting or self.kv_holding_waiting)
        if idle and not self._idle:
            # The engine goes idle and schedules no more steps: publish the empty state now,
            # or dashboards would show the last busy step's queues until the next request.
            self._last_state_s = None
            self._maybe_publish_state(self._now())
        self._idle = idle
        return outputs

    def has_finished_requests(self) -> bool:
        # Rejected requests are in no queue until update_from_output ends them; this
        # keeps the engine stepping so that their clients hear of it.
        return bool(self._rejected) or super().has_finished_requests()

    def shutdown(self) -> None:
        if self._control is not None:
            self._control.close()
        super().shutdown()

    # -- choke points inside vLLM's Scheduler ----------------------------------------

    def _preempt_request(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super()._preempt_request(request, *args, **kwargs)
        self.meter.preempt(request, self._now())

    def _free_request(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        self.meter.finish(request, self._now())  # before vLLM frees the blocks
        return super()._free_request(request, *args, **kwargs)

    # -- weights and live state ------------------------------------------------------

    def set_weight(self, tenant: str, weight: float) -> None:
        """Give `tenant` a share proportional to `weight` from now on (ValueError if <= 0)."""
        self.fair_policy.set_weight(tenant, weight)

    def fair_state(self) -> dict[str, Any]:
        """The live state the worker receives about once a second."""
        num_running, num_waiting = self.get_request_counts()
        waiting = Counter({t: self.waiting.num_waiting(t) for t in self._waiting_tenants()})
        waiting.update(tenant_of(request) for request in self.kv_holding_waiting)
        running = Counter(tenant_of(request) for request in self.running)
        snapshot = self.fair_policy.snapshot()
        tenants = {}
        for tenant in sorted(snapshot.keys() | waiting.keys() | running.keys()):
            counts = {"num_waiting": waiting[tenant], "num_running": running[tenant]}
            tenants[tenant] = {**snapshot.get(tenant, {}), **counts}
        pool = self.kv_cache_manager.block_pool
        num_blocks = pool.num_gpu_blocks - 1  # the null block is never handed out
        return {
            "policy": self.settings.policy_name,
            "timestamp": self.wall_clock(),
            "num_waiting": num_waiting,
            "num_running": num_running,
            "kv_blocks_used": num_blocks - pool.get_num_free_blocks(),
            "kv_blocks_total": num_blocks,
            "weights_applied_at": self._weights_applied_at,
            "tenants": tenants,
        }

    # -- internals ---------------------------------------------------------------

    def _now(self) -> float:
        return self._clock()

    def _waiting_tenants(self) -> list[str]:
        return self.waiting.fair_queue.waiting_tenants()

    def _on_pop(self, request: Request) -> None:
        # vLLM pops to admit (after allocating the request's blocks) and to skip (before
        # allocating, or after marking it WAITING_FOR_REMOTE_KVS); only admissions bill.
        if request.status in _ADMITTABLE and self.meter.blocks.held(request.request_id)[0]:
            self.meter.admit(request, self._now(), num_cached=_cache_hits(request))

    def _kv_holder_arrived(self, request: Request) -> None:
        if request.request_id in self.meter:
            return  # a streaming-input session back for its next chunk: metered already
        now = self._now()
        # It already holds KV blocks, so a rejection could not be honoured: count only.
        self.fair_policy.on_arrival(self.meter.track(request, now).job, now)

    def _take_rejected(self) -> None:
        for rejected in self.waiting.take_rejected():
            self.meter.reject(rejected)
            self._rejected.append(rejected)

    def _report(self, usage: SchedulerUsage) -> None:
        if self.on_usage is not None:
            self.on_usage(usage)
        if self._control is not None:
            self._control.send("usage", usage.to_dict())

    def _finish_rejected(self, outputs: dict[int, EngineCoreOutputs]) -> None:
        rejected, self._rejected = self._rejected, []
        for request in rejected:
            if request.is_finished():
                continue  # aborted meanwhile, and reported then
            self.finish_requests(request.request_id, RequestStatus.FINISHED_ERROR)
            reason = f"rejected by the {self.settings.policy_name} policy"
            output = EngineCoreOutput(
                request.request_id, [], finish_reason=FinishReason.ERROR, stop_reason=reason
            )
            outputs.setdefault(request.client_index, EngineCoreOutputs()).outputs.append(output)

    def _apply_control_messages(self) -> None:
        if self._control is None:
            return
        for kind, body in self._control.receive():
            if kind == "weights" and isinstance(body, Mapping):
                self._apply_weights(body, source="control line weights")
                # Tell the worker at once, so it can see when a change took effect.
                self._weights_applied_at = self.wall_clock()
                self._last_state_s = None
            else:
                logger.warning("control line: ignored message %r", kind)

    def _poll_weights_file(self, now: float) -> None:
        table = None if self._watcher is None else self._watcher.poll(now)
        if table is None:
            return
        # A tenant dropped from the file returns to its PARITY_WEIGHTS weight, or 1.
        for tenant in self._file_tenants - table.keys():
            self.set_weight(tenant, self.settings.weights.get(tenant, 1.0))
        self._apply_weights(table, source="PARITY_WEIGHTS_FILE")
        self._file_tenants = set(table)

    def _apply_weights(self, table: Mapping[Any, Any], *, source: str) -> None:
        for tenant, weight in table.items():
            try:
                self.set_weight(str(tenant), check_weight(str(tenant), weight, source=source))
            except ValueError as error:
                logger.warning("%s; ignored", error)

    def _maybe_publish_state(self, now: float) -> None:
        if self._control is None:
            return
        interval = self.settings.state_interval_s
        if self._last_state_s is not None and now - self._last_state_s < interval:
            return
        self._last_state_s = now
        self._control.send("state", self.fair_state())

    def _warn_about_modes(self) -> None:
        if bool(self.scheduler_config.async_scheduling) != isinstance(self, AsyncScheduler):
            logger.warning(
                "%s with async_scheduling=%s: name FairScheduler and the variant that "
                "matches vLLM's configuration is chosen",
                type(self).__name__,
                self.scheduler_config.async_scheduling,
            )
        if self.policy == SchedulingPolicy.PRIORITY:
            logger.warning(
                "FairScheduler orders the waiting queue by the %s policy; request "
                "priorities only choose preemption victims",
                self.settings.policy_name,
            )


class FairAsyncScheduler(FairScheduler, AsyncScheduler):
    """`FairScheduler`'s machinery on vLLM's `AsyncScheduler` (output placeholders, one
    step scheduled ahead). The method order puts the fair hooks first, then
    `AsyncScheduler`'s, then `Scheduler`'s: nothing is copied."""


def _async_scheduling(*args: Any, **kwargs: Any) -> bool:
    config = kwargs.get("vllm_config", args[0] if args else None)
    return bool(getattr(getattr(config, "scheduler_config", None), "async_scheduling", False))
