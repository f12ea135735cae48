"""Virtual Token Counter (Sheng et al., OSDI 2024, Algorithm 2), weighted.

Each tenant has a counter of the service it received, divided by its weight.
The waiting tenant with the smallest counter is served next. A tenant that
starts waiting again is lifted so that idling never banks credit.
"""

from __future__ import annotations

from collections.abc import Callable

from scheduler_core.costs import CostFunction, LinearCost
from scheduler_core.job import Job
from scheduler_core.policy import FairPolicy, JobLedger, Snapshot
from scheduler_core.tenant_heap import TenantHeap


class VTCPolicy(FairPolicy):
    """Least weighted counter first, with the paper's counter lift.

    Billing: the whole prompt at first admission (`cost(p, 0)`), then each
    output token as it is produced; counters grow by `cost / weight`.

    Lift (when a tenant with no waiting request gets one): if others are
    waiting, raise its counter to the smallest waiting counter; if nobody
    waits, raise it to the current counter of the tenant that left the queue
    last. Counters only ever rise to a floor, never fall, except by the
    refunds of the prediction variant.

    Order: smallest counter first; equal counters go to the tenant whose head
    request entered the queue first (its queue sequence number), never by
    name or identity. Tying on the head rather than on when a counter last
    moved keeps the order independent of how often usage is billed: billing
    every step or in arrears picks the same tenant.
    Weights change future billing only, so counters stay comparable.
    """

    name = "vtc"

    def __init__(self, cost: CostFunction | None = None, *, lift: bool = True) -> None:
        super().__init__()
        self.cost: CostFunction = LinearCost() if cost is None else cost
        self._lift_on_join = lift
        self._counters: dict[str, float] = {}
        self._waiting = TenantHeap()
        self._head_seq: dict[str, float] = {}
        self._last_leaver: str | None = None

    def counter(self, tenant: str) -> float:
        if tenant in self.unbilled_outputs:
            self._apply_unbilled(tenant)
        return self._counters.get(tenant, 0.0)

    # -- ordering -------------------------------------------------------------

    def flow_joined(self, tenant: str, head: Job, seq: int, *, returning: bool) -> None:
        if self._lift_on_join and not returning:
            self._lift(tenant)
        self.head_changed(tenant, head, seq)

    def head_changed(self, tenant: str, head: Job, seq: int) -> None:
        tie = self._head_seq[tenant] = float(seq)
        self._waiting.push(tenant, self.counter(tenant), tie=tie)

    def flow_left(self, tenant: str) -> None:
        self._waiting.discard(tenant)
        self._head_seq.pop(tenant, None)
        self._last_leaver = tenant

    def next_flow(self) -> str | None:
        # The heap holds each waiting tenant's counter as it was when last pushed: a lower
        # bound, since counters only rise while charged (a refund is pushed at once). When
        # the top's bound is its true counter, every other true counter is at least as high.
        return self._waiting.refreshed_peek(self.counter, self._head_seq)

    def ordered_flows(self) -> list[str]:
        head_seq = self._head_seq  # holds exactly the waiting tenants
        return sorted(head_seq, key=lambda tenant: (self.counter(tenant), head_seq[tenant]))

    def _lift(self, tenant: str) -> None:
        floor = None if self.next_flow() is None else self._waiting.min_key()
        if floor is None and self._last_leaver is not None:
            floor = self.counter(self._last_leaver)
        if floor is not None and floor > self.counter(tenant):
            self._counters[tenant] = floor

    # -- billing ---------------------------------------------------------------

    @property
    def charges_by_tenant(self) -> bool:
        # With a linear cost a job's output adds `w_out * output / weight` whatever it was
        # billed before, so no ledger needs reading or keeping. A cost that is not linear,
        # or a subclass that bills from the ledger, is charged job by job.
        return type(self.cost) is LinearCost and type(self)._billable is VTCPolicy._billable

    def snapshot(self) -> Snapshot:
        for tenant in list(self.unbilled_outputs):
            self._apply_unbilled(tenant)
        return super().snapshot()

    def set_weight(self, tenant: str, weight: float) -> None:
        self._apply_unbilled(tenant)  # produced under the old weight
        super().set_weight(tenant, weight)

    def _apply_unbilled(self, tenant: str) -> None:
        num_output = self.unbilled_outputs.pop(tenant, 0)
        if num_output:
            usage = self._usage(tenant)
            usage.output_tokens += num_output
            counter = self._counters.get(tenant, 0.0)
            self._counters[tenant] = counter + self.cost.total(0, num_output) / usage.weight

    def _first_admission(self, job: Job, ledger: JobLedger) -> None:
        remaining_prompt = job.prompt_tokens - ledger.input_tokens
        self._bill(job, ledger, remaining_prompt, 0)

    def _bill(self, job: Job, ledger: JobLedger, new_input: int, new_output: int) -> None:
        before = self.cost.total(*self._billable(ledger))
        super()._bill(job, ledger, new_input, new_output)
        self._move_counter(job, ledger, before)

    def _billable(self, ledger: JobLedger) -> tuple[int, int]:
        """The (input, output) tokens the counter has been charged for."""
        return ledger.input_tokens, ledger.output_tokens

    def _rebill(self, job: Job, ledger: JobLedger, change: Callable[[], None]) -> None:
        """Apply `change` to the ledger and move the counter by the cost delta."""
        before = self.cost.total(*self._billable(ledger))
        change()
        self._move_counter(job, ledger, before)

    def _move_counter(self, job: Job, ledger: JobLedger, cost_before: float) -> None:
        after = self.cost.total(*self._billable(ledger))
        if after != cost_before:
            self._add(job.tenant, (after - cost_before) / self.weight(job.tenant))

    def _add(self, tenant: str, amount: float) -> None:
        counter = self._counters[tenant] = self.counter(tenant) + amount
        if amount < 0 and tenant in self._waiting:  # a rise is picked up when read
            self._waiting.push(tenant, counter, tie=self._head_seq[tenant])

    def _extra_state(self, tenant: str) -> dict[str, float]:
        return {"counter": self.counter(tenant), "waiting": float(tenant in self._waiting)}
