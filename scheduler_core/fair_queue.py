"""The waiting queue: per-tenant FIFOs, with a policy choosing the tenant.

Mechanism apart from policy: `FairQueue` stores requests and keeps the
policy informed of which tenants wait; the policy only says who is next.
Its surface matches what vLLM's V1 scheduler needs from a waiting queue:
`peek` then (if the request fits) `pop`, `prepend` for preempted or skipped
requests, `remove` tolerant of unknown ids, exact `len`.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator

from scheduler_core.job import Job
from scheduler_core.policy import Admission, FairPolicy


class FairQueue:
    """Waiting requests of all tenants, served in the policy's order.

    Within a tenant, requests are FIFO. `pop()` returns the object `peek()`
    returned, provided nothing was pushed, prepended, removed or charged in
    between. Every request that enters gets a sequence number, so ties in
    any policy's order break by entry order. A prepended (preempted or
    skipped) request is numbered below every pushed one: it was there first.
    """

    __slots__ = (
        "_fifos",
        "_tenant_of",
        "_num_jobs",
        "_seqs",
        "_head_seqs",
        "_seq_of",
        "policy",
    )

    def __init__(self, policy: FairPolicy) -> None:
        self.policy = policy
        self._fifos: dict[str, deque[Job]] = {}
        self._tenant_of: dict[str, str] = {}
        self._seq_of: dict[str, int] = {}
        self._num_jobs = 0
        self._seqs = itertools.count()
        self._head_seqs = itertools.count(-1, -1)

    def __len__(self) -> int:
        return self._num_jobs

    def __bool__(self) -> bool:
        return self._num_jobs > 0

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._tenant_of

    def __iter__(self) -> Iterator[Job]:
        """Waiting requests in service order (assuming no further charges)."""
        return self.policy.iter_service_order(self._fifos)

    @property
    def num_tenants(self) -> int:
        """How many tenants have at least one waiting request."""
        return len(self._fifos)

    def num_waiting(self, tenant: str) -> int:
        fifo = self._fifos.get(tenant)
        return 0 if fifo is None else len(fifo)

    def waiting_tenants(self) -> list[str]:
        """Tenants with at least one waiting request, in the order they started waiting."""
        return list(self._fifos)

    # -- entering --------------------------------------------------------------

    def push(self, job: Job, now: float) -> Admission:
        """A new request: ask the policy to accept it, then queue it at the tail."""
        if job.request_id in self._tenant_of:
            raise ValueError(f"request {job.request_id} is already waiting")
        admission = self.policy.on_arrival(job, now)
        if admission is Admission.ACCEPTED:
            self._insert(job, at_head=False, returning=False)
        return admission

    def prepend(self, job: Job) -> None:
        """Put a preempted request back at the head of its tenant's FIFO.

        It is not new demand: no arrival is recorded and no counter lifted.
        """
        if job.request_id in self._tenant_of:
            raise ValueError(f"request {job.request_id} is already waiting")
        self._insert(job, at_head=True, returning=True)

    def prepend_all(self, jobs: Iterable[Job]) -> None:
        """Prepend several requests so that they come out in the given order."""
        for job in reversed(list(jobs)):
            self.prepend(job)

    # -- leaving ---------------------------------------------------------------

    def peek(self) -> Job | None:
        """The request the policy would serve next, without removing it."""
        tenant = self.policy.next_tenant()
        return None if tenant is None else self._fifos[tenant][0]

    def pop(self) -> Job:
        """Remove and return the request `peek()` returns; IndexError if empty."""
        tenant = self.policy.next_tenant()
        if tenant is None:
            raise IndexError("pop from an empty FairQueue")
        job = self._fifos[tenant].popleft()
        self._forget(job)
        self._announce_head(tenant)
        return job

    def remove(self, request_id: str) -> Job | None:
        """Remove a waiting request by id; unknown ids are ignored (None)."""
        tenant = self._tenant_of.get(request_id)
        if tenant is None:
            return None
        fifo = self._fifos[tenant]
        index = next(i for i, job in enumerate(fifo) if job.request_id == request_id)
        job = fifo[index]
        del fifo[index]
        self._forget(job)
        if index == 0:
            self._announce_head(tenant)
        return job

    def remove_all(self, request_ids: Iterable[str]) -> list[Job]:
        """Remove every listed request that is waiting; return those removed."""
        removed = (self.remove(request_id) for request_id in request_ids)
        return [job for job in removed if job is not None]

    # -- internals ---------------------------------------------------------------

    def _insert(self, job: Job, *, at_head: bool, returning: bool) -> None:
        fifo = self._fifos.get(job.tenant)
        joined = fifo is None
        if fifo is None:
            fifo = self._fifos[job.tenant] = deque()
        if at_head:
            fifo.appendleft(job)
        else:
            fifo.append(job)
        self._tenant_of[job.request_id] = job.tenant
        seq = next(self._head_seqs if at_head else self._seqs)
        self._seq_of[job.request_id] = seq
        self._num_jobs += 1
        if joined:
            self.policy.tenant_joined(job.tenant, job, seq, returning=returning)
        elif at_head:
            self.policy.head_changed(job.tenant, job, seq)

    def _forget(self, job: Job) -> None:
        del self._tenant_of[job.request_id]
        del self._seq_of[job.request_id]
        self._num_jobs -= 1

    def _announce_head(self, tenant: str) -> None:
        fifo = self._fifos[tenant]
        if fifo:
            self.policy.head_changed(tenant, fifo[0], self._seq_of[fifo[0].request_id])
            return
        del self._fifos[tenant]
        self.policy.tenant_left(tenant)
