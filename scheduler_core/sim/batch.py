"""Per-request progress inside the engine, and lazy billing of usage to the policy.

Billing is lazy because charging every running request on every step would
dominate the simulator's run time; `UsageLedger` accumulates usage on each
sequence and bills a tenant only when the policy's view of it matters.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_core.job import Job
from scheduler_core.policy import FairPolicy
from scheduler_core.sim.records import RequestRecord


@dataclass(slots=True, eq=False)
class Seq:
    """A request's progress inside the engine (kept across preemption)."""

    job: Job
    record: RequestRecord
    target: int
    prefill_left: int
    num_output: int = 0
    num_blocks: int = 0
    pending_in: int = 0
    billed_out: int = 0
    served_in: int = 0
    kv_mark: int = 0
    pending_kv: int = 0

    @property
    def num_resident(self) -> int:
        """Tokens whose KV is in the cache now."""
        return self.job.prompt_tokens + self.num_output - self.prefill_left


class UsageLedger:
    """Running sequences by tenant, their unbilled usage, and tokens served.

    A tenant is *settled* at step s when all its usage up to step s has been
    billed to the policy.
    """

    __slots__ = ("policy", "by_tenant", "_billed_step", "served_in", "served_out")

    def __init__(self, policy: FairPolicy) -> None:
        self.policy = policy
        self.by_tenant: dict[str, list[Seq]] = {}
        self._billed_step: dict[str, int] = {}
        self.served_in: dict[str, int] = {}
        self.served_out: dict[str, int] = {}

    def join(self, seq: Seq, step: int) -> None:
        seq.kv_mark = step
        self.by_tenant.setdefault(seq.job.tenant, []).append(seq)

    def leave(self, seq: Seq, step: int) -> None:
        """Bill everything `seq` still owes and stop tracking it."""
        self.bill(seq, step)
        mates = self.by_tenant[seq.job.tenant]
        mates.remove(seq)
        if not mates:
            del self.by_tenant[seq.job.tenant]

    def is_settled(self, tenant: str, step: int) -> bool:
        return tenant not in self.by_tenant or self._billed_step.get(tenant, -1) >= step

    def settle(self, tenant: str, step: int) -> None:
        for seq in self.by_tenant.get(tenant, ()):
            self.bill(seq, step)
        self._billed_step[tenant] = step

    def settle_all(self, step: int) -> None:
        for tenant in self.by_tenant:
            self.settle(tenant, step)

    def settle_kv(self, seq: Seq, step: int) -> None:
        """Accrue block-steps before the number of blocks held changes."""
        seq.pending_kv += seq.num_blocks * (step - seq.kv_mark)
        seq.kv_mark = step

    def bill(self, seq: Seq, step: int) -> None:
        self.settle_kv(seq, step)
        new_out = seq.num_output - seq.billed_out
        if not (seq.pending_in or new_out or seq.pending_kv):
            return
        job = seq.job
        self.policy.charge(job, seq.pending_in, new_out, seq.pending_kv)
        # Served input counts each prompt token once, as the policy bills it.
        new_in = min(seq.pending_in, job.prompt_tokens - seq.served_in)
        seq.served_in += new_in
        self.served_in[job.tenant] = self.served_in.get(job.tenant, 0) + new_in
        self.served_out[job.tenant] = self.served_out.get(job.tenant, 0) + new_out
        seq.pending_in, seq.billed_out, seq.pending_kv = 0, seq.num_output, 0
