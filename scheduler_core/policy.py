"""The one interface every fair-scheduling policy implements.

Two callers drive a policy. The engine (the simulator, or the vLLM adapter)
reports the request lifecycle: arrival, admission, per-step usage, finish.
The `FairQueue` keeps one FIFO per *flow* (the policy says what a flow is:
a tenant for VTC and FCFS, an application for Justitia), reports which
flows have waiting requests and asks which flow goes next. Policies never
see KV blocks, batches or clocks directly: time is passed in as `now`.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

from scheduler_core.apps import AppInfo
from scheduler_core.job import Job

Snapshot = dict[str, dict[str, float]]
# One request's share of an engine step: (job, input tokens, output tokens, kv block-steps).
Charge = tuple[Job, int, int, int]


class Admission(enum.Enum):
    """What `on_arrival` decided."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"


@dataclass(slots=True)
class TenantUsage:
    """Per-tenant accounting every policy keeps, for dashboards and tests."""

    weight: float = 1.0
    num_arrived: int = 0
    num_rejected: int = 0
    num_admitted: int = 0
    num_finished: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    kv_block_steps: int = 0


@dataclass(slots=True)
class JobLedger:
    """What has been billed for one admitted request."""

    input_tokens: int = 0
    output_tokens: int = 0
    predicted_output: int = 0
    admitted: bool = False


class FairPolicy(ABC):
    """Base of all policies: lifecycle hooks, weights, accounting, ordering.

    Lifecycle contract: `on_arrival` once per request; `on_admit` each time
    the request is (re)admitted (a re-admission after preemption bills
    nothing); `charge` with the tokens actually computed per step (prompt
    tokens beyond `prompt_tokens`, e.g. recomputation after preemption, are
    never billed twice); `on_finish` exactly once per accepted request,
    whether it finished or was aborted.
    """

    name: str = "policy"

    def __init__(self) -> None:
        self._tenants: dict[str, TenantUsage] = {}
        self._jobs: dict[str, JobLedger] = {}
        # Where `charges_by_tenant`: output tokens per tenant an engine has produced and
        # the policy has yet to apply. An engine adds to it once per request per step, a
        # dict update and no call; the policy applies a tenant's when it next reads that
        # tenant's standing (in practice: the few tenants a pick looks at).
        self.unbilled_outputs: dict[str, int] = {}

    # -- lifecycle, called by the engine ---------------------------------

    def on_arrival(self, job: Job, now: float) -> Admission:
        """A request arrived; REJECTED keeps it out of the queue."""
        self._usage(job.tenant).num_arrived += 1
        return Admission.ACCEPTED

    def on_app_arrival(self, info: AppInfo, now: float) -> None:
        """An application arrived; its first calls follow. Only Justitia listens."""
        return None

    def on_admit(self, job: Job, now: float) -> None:
        """The engine took the request from the queue into its running batch."""
        ledger = self._jobs.setdefault(job.request_id, JobLedger())
        if ledger.admitted:
            return
        ledger.admitted = True
        self._usage(job.tenant).num_admitted += 1
        self._first_admission(job, ledger)

    def charge(
        self, job: Job, input_tokens: int, output_tokens: int, kv_block_steps: int = 0
    ) -> None:
        """Bill one engine step (or several) of work done for `job`."""
        if min(input_tokens, output_tokens, kv_block_steps) < 0:
            raise ValueError(f"request {job.request_id}: charges must be >= 0")
        if not (input_tokens or output_tokens):  # memory held, no tokens: no cost moves
            self._usage(job.tenant).kv_block_steps += kv_block_steps
            return
        ledger = self._jobs.setdefault(job.request_id, JobLedger(admitted=True))
        new_input = min(input_tokens, job.prompt_tokens - ledger.input_tokens)
        self._bill(job, ledger, new_input, output_tokens)
        self._usage(job.tenant).kv_block_steps += kv_block_steps

    def charge_step(self, charges: Sequence[Charge]) -> None:
        """Bill one engine step for many jobs at once: `(job, input, output, kv_block_steps)`.

        The engine adapter calls this once per hook instead of `charge` per request; it is
        `charge` job by job. (Output tokens of a policy that `charges_by_tenant` go to
        `unbilled_outputs` instead.)
        """
        for job, input_tokens, output_tokens, kv_block_steps in charges:
            self.charge(job, input_tokens, output_tokens, kv_block_steps)

    @property
    def charges_by_tenant(self) -> bool:
        """Whether an engine may charge output tokens per tenant, by adding them to
        `unbilled_outputs`, instead of job by job through `charge_step`: true where a
        job's output cost does not depend on what it was billed before."""
        return False

    def on_finish(self, job: Job, now: float) -> None:
        """The request finished or was aborted; its ledger is closed."""
        ledger = self._jobs.pop(job.request_id, None)
        self._usage(job.tenant).num_finished += 1
        if ledger is not None:
            self._closed(job, ledger)

    # -- weights and dashboards --------------------------------------------

    def set_weight(self, tenant: str, weight: float) -> None:
        """Give `tenant` a share proportional to `weight` from now on."""
        if not weight > 0:
            raise ValueError(f"weight of tenant {tenant!r} must be > 0, got {weight}")
        self._usage(tenant).weight = float(weight)

    def weight(self, tenant: str) -> float:
        usage = self._tenants.get(tenant)
        return 1.0 if usage is None else usage.weight

    def snapshot(self) -> Snapshot:
        """Per-tenant counters and usage as plain numbers."""
        return {
            tenant: {**asdict(usage), **self._extra_state(tenant)}
            for tenant, usage in sorted(self._tenants.items())
        }

    # -- ordering, called by FairQueue ----------------------------------------

    def flow_of(self, job: Job) -> str:
        """The FIFO `job` waits in; requests of one flow are served in order."""
        return job.tenant

    @abstractmethod
    def flow_joined(self, flow: str, head: Job, seq: int, *, returning: bool) -> None:
        """`flow` had no waiting request and now has `head`.

        `returning` is True when the request comes back after preemption: it
        must not be treated as new demand (no counter lift).
        """

    def head_changed(self, flow: str, head: Job, seq: int) -> None:
        """The first waiting request of a still-waiting flow changed."""
        return None

    @abstractmethod
    def flow_left(self, flow: str) -> None:
        """`flow` has no waiting request any more."""

    @abstractmethod
    def next_flow(self) -> str | None:
        """The waiting flow to serve next; None when nobody waits."""

    @abstractmethod
    def ordered_flows(self) -> list[str]:
        """All waiting flows in the order they would be served now."""

    def preemption_rank(self, job: Job) -> float | None:
        """Where a *running* request stands in line: when KV runs out the engine
        preempts the highest rank. None (the default) leaves the choice to the
        engine: vLLM preempts the request it admitted last."""
        return None

    def iter_service_order(self, fifos: Mapping[str, Sequence[Job]]) -> Iterator[Job]:
        """Waiting requests in service order, assuming no further charges."""
        for flow in self.ordered_flows():
            yield from fifos[flow]

    # -- hooks for subclasses ------------------------------------------------------

    def _first_admission(self, job: Job, ledger: JobLedger) -> None:
        """Called once per request, at its first admission."""
        return None

    def _bill(self, job: Job, ledger: JobLedger, new_input: int, new_output: int) -> None:
        ledger.input_tokens += new_input
        ledger.output_tokens += new_output
        usage = self._usage(job.tenant)
        usage.input_tokens += new_input
        usage.output_tokens += new_output

    def _closed(self, job: Job, ledger: JobLedger) -> None:
        """Called once per request with its final ledger."""
        return None

    def _extra_state(self, tenant: str) -> dict[str, float]:
        return {}

    def _usage(self, tenant: str) -> TenantUsage:
        usage = self._tenants.get(tenant)
        if usage is None:
            usage = self._tenants[tenant] = TenantUsage()
        return usage
