"""First come, first served: the order of arrival, whoever the tenant."""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence

from scheduler_core.job import Job
from scheduler_core.policy import FairPolicy
from scheduler_core.tenant_heap import TenantHeap


class FCFSPolicy(FairPolicy):
    """Serves the waiting request with the earliest `arrival_s`.

    Ties break by queue sequence number (push order). Only tenants' head
    requests are compared: each tenant's FIFO is already in arrival order.
    """

    name = "fcfs"

    def __init__(self) -> None:
        super().__init__()
        self._heads = TenantHeap()

    def flow_joined(self, tenant: str, head: Job, seq: int, *, returning: bool) -> None:
        self._heads.push(tenant, head.arrival_s, tie=seq)

    def head_changed(self, tenant: str, head: Job, seq: int) -> None:
        self._heads.push(tenant, head.arrival_s, tie=seq)

    def flow_left(self, tenant: str) -> None:
        self._heads.discard(tenant)

    def next_flow(self) -> str | None:
        return self._heads.peek()

    def ordered_flows(self) -> list[str]:
        return self._heads.ordered()

    def iter_service_order(self, fifos: Mapping[str, Sequence[Job]]) -> Iterator[Job]:
        # A k-way merge by arrival; heapq.merge is stable, so equal arrival
        # times keep the tenants' current order.
        streams = [fifos[tenant] for tenant in self.ordered_flows()]
        return heapq.merge(*streams, key=lambda job: job.arrival_s)
