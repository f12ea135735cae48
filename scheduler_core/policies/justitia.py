"""Justitia (Yang et al., arXiv 2510.17015): applications served in fair completion order.

Three ideas. Cost is memory-centric: a call with p prompt and d output
tokens holds about `p*d + d^2/2` KV token-steps, and an application costs
the sum over its calls. A predictor guesses that cost when the application
arrives. And the scheduler serves applications in the order in which they
would finish under ideal fair sharing (GPS over KV memory, weighted by
tenant): application i gets virtual start `S_i = V(arrival)` and virtual
finish `F_i = S_i + C_i / w_i`, and the waiting application with the
smallest F goes first, with as many of its ready calls as memory takes,
then the next (work-conserving). Serving one application at a time with the
whole engine, in that order, cuts mean completion time (it behaves like
shortest-job-first when applications arrive together) while the order
itself is the fair one, which bounds how late anyone finishes
(`scheduler_core/README.md`, "Justitia's delay bound").

Mispredictions: F uses `max(predicted, accrued)`, so an application that
outgrows its prediction moves back in the order as its cost accrues; it
cannot hold its place ahead of others. An over-prediction only delays the
application that was over-predicted.

Weights: an application takes its tenant's weight. A weight change rebases
the tenant's open applications at the current virtual time: service the
reference already gave them stays given, the rest is shared at the new
weight.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_core.apps import AppInfo, AppType
from scheduler_core.costs import MemoryCost
from scheduler_core.demand import DemandPredictor, OracleDemand
from scheduler_core.job import Job
from scheduler_core.policy import Admission, FairPolicy, JobLedger
from scheduler_core.tenant_heap import TenantHeap
from scheduler_core.virtual_time import VirtualClock

_SEP = "\x1f"  # between tenant and app id in a flow key: app ids are per tenant
_MEMORY = MemoryCost()


@dataclass(slots=True)
class AppState:
    """One open application as the policy sees it."""

    flow: str
    info: AppInfo
    weight: float
    start_v: float
    predicted: float
    accrued: float = 0.0
    # The reference's service is counted from (base_v, base_served) at `weight`:
    # a weight change moves the base instead of rewriting history.
    base_v: float = 0.0
    base_served: float = 0.0
    live_calls: int = 0
    done_calls: int = 0
    idle_since: float | None = None

    @property
    def demand(self) -> float:
        """What the application is charged for: its prediction until it outgrows it."""
        return max(self.predicted, self.accrued)

    @property
    def finish_v(self) -> float:
        return self.base_v + (self.demand - self.base_served) / self.weight

    def rebase(self, now_v: float, weight: float) -> None:
        """Keep the reference's service up to `now_v` and continue at `weight`."""
        reached = min(now_v, self.finish_v)
        self.base_served += (reached - self.base_v) * self.weight
        self.base_v = reached
        self.weight = weight


def flow_key(tenant: str, app: str) -> str:
    return f"{tenant}{_SEP}{app}"


class JustitiaPolicy(FairPolicy):
    """Smallest virtual finish first, over applications; memory-centric cost.

    `idle_timeout_s`: an application whose number of calls is unknown (inside
    vLLM, calls just keep arriving under one `app` id) is closed once it has
    had no call waiting or running for this long; a later call with the same
    id opens a new application.
    """

    name = "justitia"

    def __init__(
        self,
        predictor: DemandPredictor | None = None,
        *,
        name: str = "justitia",
        idle_timeout_s: float = 30.0,
    ) -> None:
        super().__init__()
        self.name = name
        self.predictor: DemandPredictor = OracleDemand() if predictor is None else predictor
        self.idle_timeout_s = idle_timeout_s
        self.clock = VirtualClock()
        self._apps: dict[str, AppState] = {}
        self._apps_of: dict[str, set[str]] = {}
        self._ready = TenantHeap()
        self._head_seq: dict[str, int] = {}
        self._idle: dict[str, float] = {}  # flow -> idle since; insertion order = oldest first

    # -- applications --------------------------------------------------------------

    def flow_of(self, job: Job) -> str:
        # A request outside any application is an application of one call.
        return flow_key(job.tenant, job.app if job.app is not None else _SEP + job.request_id)

    def on_app_arrival(self, info: AppInfo, now: float) -> None:
        self._close_idle(now)
        flow = flow_key(info.tenant, info.app_id)
        if flow not in self._apps:
            self._open(flow, info)

    def app(self, tenant: str, app_id: str) -> AppState | None:
        return self._apps.get(flow_key(tenant, app_id))

    def on_arrival(self, job: Job, now: float) -> Admission:
        admission = super().on_arrival(job, now)
        self._close_idle(now)
        flow = self.flow_of(job)
        state = self._apps.get(flow)
        if state is None:
            state = self._open(flow, _info_from_call(job))
        state.live_calls += 1
        state.idle_since = None
        self._idle.pop(flow, None)
        return admission

    def on_finish(self, job: Job, now: float) -> None:
        super().on_finish(job, now)
        flow = self.flow_of(job)
        state = self._apps.get(flow)
        if state is None:
            return
        state.live_calls -= 1
        state.done_calls += 1
        if state.info.num_calls is not None and state.done_calls >= state.info.num_calls:
            self._close(state)
        elif state.live_calls == 0:
            state.idle_since = now
            self._idle[flow] = now

    def _open(self, flow: str, info: AppInfo) -> AppState:
        weight = self.weight(info.tenant)
        start = self.clock.now
        state = AppState(flow, info, weight, start, self.predictor.predict(info), base_v=start)
        self._apps[flow] = state
        self._apps_of.setdefault(info.tenant, set()).add(flow)
        self.clock.set(flow, state.finish_v, weight)
        return state

    def _close(self, state: AppState) -> None:
        """The application is over: its reference finish now uses its true cost."""
        state.predicted = 0.0
        self.clock.set(state.flow, state.finish_v, state.weight)
        self.predictor.observe(state.info, state.accrued)
        del self._apps[state.flow]
        self._idle.pop(state.flow, None)
        flows = self._apps_of[state.info.tenant]
        flows.discard(state.flow)
        if not flows:
            del self._apps_of[state.info.tenant]

    def _close_idle(self, now: float) -> None:
        while self._idle:
            flow, since = next(iter(self._idle.items()))
            if now - since < self.idle_timeout_s:
                return
            self._close(self._apps[flow])

    # -- ordering ----------------------------------------------------------------------

    def flow_joined(self, flow: str, head: Job, seq: int, *, returning: bool) -> None:
        self.head_changed(flow, head, seq)

    def head_changed(self, flow: str, head: Job, seq: int) -> None:
        self._head_seq[flow] = seq
        self._ready.push(flow, self._finish_of(flow), tie=seq)

    def flow_left(self, flow: str) -> None:
        self._ready.discard(flow)
        self._head_seq.pop(flow, None)

    def next_flow(self) -> str | None:
        return self._ready.peek()

    def ordered_flows(self) -> list[str]:
        return self._ready.ordered()

    def preemption_rank(self, job: Job) -> float:
        # Memory runs out: the application that would finish last under fair
        # sharing gives its blocks back, not the one admitted last.
        return self._finish_of(self.flow_of(job))

    def _finish_of(self, flow: str) -> float:
        state = self._apps.get(flow)
        # A preempted call of an already-closed application: first in line.
        return self.clock.now if state is None else state.finish_v

    def _reorder(self, state: AppState) -> None:
        self.clock.set(state.flow, state.finish_v, state.weight)
        if state.flow in self._ready:
            self._ready.push(state.flow, state.finish_v, tie=self._head_seq[state.flow])

    # -- billing -----------------------------------------------------------------------------

    def _bill(self, job: Job, ledger: JobLedger, new_input: int, new_output: int) -> None:
        before = _MEMORY.total(ledger.input_tokens, ledger.output_tokens)
        super()._bill(job, ledger, new_input, new_output)
        work = _MEMORY.total(ledger.input_tokens, ledger.output_tokens) - before
        if work <= 0:
            return
        state = self._apps.get(self.flow_of(job))
        outgrown = state is not None and state.accrued + work > state.predicted
        if state is not None:
            state.accrued += work
        self.clock.advance(work)
        if state is not None and outgrown:
            self._reorder(state)

    def set_weight(self, tenant: str, weight: float) -> None:
        super().set_weight(tenant, weight)
        for flow in self._apps_of.get(tenant, ()):
            state = self._apps[flow]
            state.rebase(self.clock.now, float(weight))
            self._reorder(state)

    def _extra_state(self, tenant: str) -> dict[str, float]:
        open_apps = [self._apps[flow] for flow in self._apps_of.get(tenant, ())]
        return {
            "virtual_time": self.clock.now,
            "open_apps": float(len(open_apps)),
            "predicted_cost": sum(state.predicted for state in open_apps),
            "accrued_cost": sum(state.accrued for state in open_apps),
        }


def _info_from_call(job: Job) -> AppInfo:
    """What a lone call says about an application nobody announced."""
    return AppInfo(
        app_id=job.app if job.app is not None else job.request_id,
        tenant=job.tenant,
        arrival_s=job.arrival_s,
        app_type=AppType.UNKNOWN,
        prompt_tokens=job.prompt_tokens,
        fan_out=1,
        max_tokens=job.max_tokens,
        num_calls=None if job.app is not None else 1,
    )
