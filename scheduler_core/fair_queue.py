"""The waiting queue: per-flow FIFOs, with a policy choosing the flow.

Mechanism apart from policy: `FairQueue` stores requests and keeps the
policy informed of which flows wait; the policy only says who is next. A
flow is whatever the policy groups requests by (`FairPolicy.flow_of`): the
tenant for VTC, the application for Justitia.
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

    Within a flow, requests are FIFO. `pop()` returns the object `peek()`
    returned, provided nothing was pushed, prepended, removed or charged in
    between. Every request that enters gets a sequence number, so ties in
    any policy's order break by entry order. A prepended (preempted or
    skipped) request is numbered below every pushed one: it was there first.
    """

    __slots__ = (
        "_fifos",
        "_flow_of",
        "_tenant_counts",
        "_num_jobs",
        "_seqs",
        "_head_seqs",
        "_seq_of",
        "policy",
    )

    def __init__(self, policy: FairPolicy) -> None:
        self.policy = policy
        self._fifos: dict[str, deque[Job]] = {}
        self._flow_of: dict[str, str] = {}
        self._tenant_counts: dict[str, int] = {}  # insertion order: when a tenant began waiting
        self._seq_of: dict[str, int] = {}
        self._num_jobs = 0
        self._seqs = itertools.count()
        self._head_seqs = itertools.count(-1, -1)

    def __len__(self) -> int:
        return self._num_jobs

    def __bool__(self) -> bool:
        return self._num_jobs > 0

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._flow_of

    def __iter__(self) -> Iterator[Job]:
        """Waiting requests in service order (assuming no further charges)."""
        return self.policy.iter_service_order(self._fifos)

    @property
    def num_tenants(self) -> int:
        """How many tenants have at least one waiting request."""
        return len(self._tenant_counts)

    def num_waiting(self, tenant: str) -> int:
        return self._tenant_counts.get(tenant, 0)

    def waiting_tenants(self) -> list[str]:
        """Tenants with at least one waiting request, in the order they started waiting."""
        return list(self._tenant_counts)

    # -- entering --------------------------------------------------------------

    def push(self, job: Job, now: float) -> Admission:
        """A new request: ask the policy to accept it, then queue it at the tail."""
        if job.request_id in self._flow_of:
            raise ValueError(f"request {job.request_id} is already waiting")
        admission = self.policy.on_arrival(job, now)
        if admission is Admission.ACCEPTED:
            self._insert(job, at_head=False, returning=False)
        return admission

    def prepend(self, job: Job) -> None:
        """Put a preempted request back at the head of its flow's FIFO.

        It is not new demand: no arrival is recorded and no counter lifted.
        """
        if job.request_id in self._flow_of:
            raise ValueError(f"request {job.request_id} is already waiting")
        self._insert(job, at_head=True, returning=True)

    def prepend_all(self, jobs: Iterable[Job]) -> None:
        """Prepend several requests so that they come out in the given order."""
        for job in reversed(list(jobs)):
            self.prepend(job)

    # -- leaving ---------------------------------------------------------------

    def peek(self) -> Job | None:
        """The request the policy would serve next, without removing it."""
        flow = self.policy.next_flow()
        return None if flow is None else self._fifos[flow][0]

    def pop(self) -> Job:
        """Remove and return the request `peek()` returns; IndexError if empty."""
        flow = self.policy.next_flow()
        if flow is None:
            raise IndexError("pop from an empty FairQueue")
        job = self._fifos[flow].popleft()
        self._forget(job)
        self._announce_head(flow)
        return job

    def remove(self, request_id: str) -> Job | None:
        """Remove a waiting request by id; unknown ids are ignored (None)."""
        flow = self._flow_of.get(request_id)
        if flow is None:
            return None
        fifo = self._fifos[flow]
        index = next(i for i, job in enumerate(fifo) if job.request_id == request_id)
        job = fifo[index]
        del fifo[index]
        self._forget(job)
        if index == 0:
            self._announce_head(flow)
        return job

    def remove_all(self, request_ids: Iterable[str]) -> list[Job]:
        """Remove every listed request that is waiting; return those removed."""
        removed = (self.remove(request_id) for request_id in request_ids)
        return [job for job in removed if job is not None]

    # -- internals ---------------------------------------------------------------

    def _insert(self, job: Job, *, at_head: bool, returning: bool) -> None:
        flow = self.policy.flow_of(job)
        fifo = self._fifos.get(flow)
        joined = fifo is None
        if fifo is None:
            fifo = self._fifos[flow] = deque()
        if at_head:
            fifo.appendleft(job)
        else:
            fifo.append(job)
        self._flow_of[job.request_id] = flow
        self._tenant_counts[job.tenant] = self._tenant_counts.get(job.tenant, 0) + 1
        seq = next(self._head_seqs if at_head else self._seqs)
        self._seq_of[job.request_id] = seq
        self._num_jobs += 1
        if joined:
            self.policy.flow_joined(flow, job, seq, returning=returning)
        elif at_head:
            self.policy.head_changed(flow, job, seq)

    def _forget(self, job: Job) -> None:
        del self._flow_of[job.request_id]
        del self._seq_of[job.request_id]
        self._num_jobs -= 1
        left = self._tenant_counts[job.tenant] - 1
        if left:
            self._tenant_counts[job.tenant] = left
        else:
            del self._tenant_counts[job.tenant]

    def _announce_head(self, flow: str) -> None:
        fifo = self._fifos[flow]
        if fifo:
            self.policy.head_changed(flow, fifo[0], self._seq_of[fifo[0].request_id])
            return
        del self._fifos[flow]
        self.policy.flow_left(flow)
