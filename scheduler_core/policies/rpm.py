"""Requests-per-minute limit: the industry default, FCFS below the limit."""

from __future__ import annotations

from collections import deque

from scheduler_core.job import Job
from scheduler_core.policies.fcfs import FCFSPolicy
from scheduler_core.policy import Admission


class RPMPolicy(FCFSPolicy):
    """Rejects a tenant's request when it already had `limit` accepted
    requests in the last `window_s` seconds (a sliding window); otherwise FCFS.

    `now` must not decrease between calls for the same tenant.
    """

    def __init__(self, limit: int, *, window_s: float = 60.0) -> None:
        if limit < 1:
            raise ValueError(f"rpm limit must be >= 1, got {limit}")
        if not window_s > 0:
            raise ValueError(f"rpm window must be > 0, got {window_s}")
        super().__init__()
        self.name = f"rpm{limit}"
        self.limit = limit
        self.window_s = window_s
        self._accepted: dict[str, deque[float]] = {}

    def on_arrival(self, job: Job, now: float) -> Admission:
        super().on_arrival(job, now)
        recent = self._accepted.setdefault(job.tenant, deque())
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        if len(recent) >= self.limit:
            self._usage(job.tenant).num_rejected += 1
            return Admission.REJECTED
        recent.append(now)
        return Admission.ACCEPTED
