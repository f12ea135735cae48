"""What the simulator reports: one record per request, and the run's totals."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class RequestStatus(enum.IntEnum):
    """Lifecycle, in order; FINISHED and REJECTED are final."""

    WAITING = 1
    RUNNING = 2
    FINISHED = 3
    REJECTED = 4


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    tenant: str
    arrival_s: float
    prompt_tokens: int
    requested_output_tokens: int
    status: RequestStatus = RequestStatus.WAITING
    admitted_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    output_tokens: int = 0
    num_preemptions: int = 0
    app: str | None = None

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def latency_s(self) -> float | None:
        return None if self.finish_s is None else self.finish_s - self.arrival_s


@dataclass(slots=True)
class ServiceSample:
    """Cumulative tokens processed per tenant, and who was waiting, after a step."""

    time_s: float
    input_tokens: dict[str, int]
    output_tokens: dict[str, int]
    backlogged: frozenset[str]


@dataclass(slots=True)
class SimResult:
    records: list[RequestRecord]
    makespan_s: float
    num_steps: int
    num_preemptions: int
    service_log: list[ServiceSample] = field(default_factory=list)
