"""The pool-wide fair gate: the first queue a request waits in, and a fair one.

The pool's capacity is what its live workers said they can hold (engine seats plus a
small buffer), summed over the workers that sent a heartbeat within `WORKER_TTL_S`.
Requests within capacity take a seat at once. Beyond it they wait in their tenant's
queue, and each freed seat goes to the backlogged tenant with the lowest weighted virtual
counter: VTC (scheduler_core's `VTCPolicy`) across the whole pool. So the broker and the
workers never hold more than the workers can take, and their FIFO order decides nothing.

Headroom: a full pool still seats at once a request whose tenant holds less than its
weighted share of the capacity (among the tenants holding seats or waiting), up to
`HEADROOM` of the capacity beyond it. Seats free in waves (an engine's batch finishes
together), so without it a tenant arriving behind a flood waited for the next wave at the
gate, hundreds of milliseconds, before the engine's own fair queue could pick it; with it
the engine's queue, fair itself, is the first place it waits. Freed seats are not handed
on while the pool is over capacity, so the flood's share shrinks to make the room.

Charging: a seat reserves `cost(prompt estimate, max_tokens)` on its tenant's counter when
it is granted (VTC with an upper-bound prediction of the output), and the release
reconciles to the tokens the engine reported. Ties between equal counters go to the
tenant whose head request queued first (a sequence number), as in `VTCPolicy`; a tenant
that starts waiting is lifted to the smallest waiting counter (or the last leaver's), so
idling never banks credit.

Seats and queued tickets are leases: the gateway process that holds them refreshes them;
one that dies lets them lapse within `LEASE_S`.

Two stores implement this one algorithm: `LocalGate` (below, in-process, the embedded
mode) and `RedisGate` (`wire/redis_gate.py`, atomic Lua, production). Both pass the same
tests (`tests/wire/test_gate.py`).
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from collections.abc import Container, Iterable
from dataclasses import dataclass, field

from scheduler_core.costs import LinearCost

LEASE_S = 20.0  # a seat or ticket whose gateway stopped refreshing it lapses after this
REFRESH_S = 5.0  # how often a gateway refreshes its leases
WORKER_TTL_S = 5.0  # a worker silent for this long leaves the pool
# No call at all for this long: the store stood still (a paused machine), and the stretch
# counts against no lease. Live workers call every second, but a busy one can leave gaps
# of a few seconds, and each forgiven gap would stretch a dead gateway's seats further; a
# lease only needs forgiving once a pause nears LEASE_S - REFRESH_S (15 s).
PAUSE_S = 10.0
# With no live worker, requests still queue for this long after the last one was seen
# (a worker merely too busy to send its heartbeat is not "no engine"); after it, 503.
NO_WORKER_GRACE_S = 30.0
MAX_RETRY_AFTER_S = 60
# A seat its worker gave back (`Gate.release`) stays given back for this long: its gateway
# holds the request until the answer is out, and its lease refresh must not put the seat
# back meanwhile. As long as any request may last (the gateway's request timeout).
RELEASED_KEEP_S = 600.0
# Seats beyond the capacity that tenants below their fair share may take (a fraction of
# it; the workers run half again as many task threads as seats, so they can hold them).
HEADROOM = 0.25
COST = LinearCost()  # VTC's default service measure: input tokens + 2 x output tokens


class TicketLapsed(RuntimeError):
    """A waiting ticket's lease lapsed (its gateway could not renew it in time): the
    request is no longer queued and must enter again."""


class Verdict(enum.StrEnum):
    SEATED = "seated"  # go on to the workers now
    QUEUED = "queued"  # wait for a seat (`Gate.wait_seat`)
    TENANT_LIMIT = "tenant_limit"  # the tenant's own limit on open requests
    QUEUE_FULL = "queue_full"  # the tenant's queue is at its bound
    NO_WORKERS = "no_workers"  # no worker has served this pool lately


@dataclass(frozen=True, slots=True)
class Ticket:
    """One request asking for a seat."""

    request_id: str
    tenant: str
    weight: float
    cost: float  # reserved on the tenant's counter when seated (see `reserve_cost`)
    tenant_limit: int  # open requests (seated + queued) the tenant may hold
    queue_limit: int  # requests the tenant may have waiting


@dataclass(frozen=True, slots=True)
class Entry:
    verdict: Verdict
    position: int = 0  # in the tenant's queue, 1 = next, when QUEUED or QUEUE_FULL
    retry_after_s: int = 1


@dataclass(frozen=True, slots=True)
class TenantGateState:
    weight: float
    counter: float
    num_seated: int
    num_queued: int


@dataclass(frozen=True, slots=True)
class GateState:
    capacity: int
    num_seated: int
    workers: dict[str, int]
    tenants: dict[str, TenantGateState] = field(default_factory=dict)


def split_held(held: Iterable[Ticket], waiting: Container[str]) -> tuple[list[Ticket], list[str]]:
    """A gateway's tickets as `Gate.refresh` takes them: the seated ones (whole, so a lost
    seat can be put back) and the ids of those still `waiting` for a seat."""
    tickets = list(held)
    seated = [t for t in tickets if t.request_id not in waiting]
    return seated, [t.request_id for t in tickets if t.request_id in waiting]


def reserve_cost(prompt_tokens: int, max_tokens: int) -> float:
    """What a seat reserves: the prompt and every output token it may produce."""
    return COST.total(prompt_tokens, max_tokens)


def served_cost(prompt_tokens: int, output_tokens: int) -> float:
    return COST.total(prompt_tokens, output_tokens)


def retry_after(num_queued: int, num_seated: int, hold_s: float) -> int:
    """Seconds until a tenant with this backlog can expect room in its queue: its queue
    drains at about `num_seated` requests per `hold_s` (the pool's mean seat time)."""
    seconds = math.ceil(num_queued * max(hold_s, 0.05) / max(num_seated, 1))
    return min(max(seconds, 1), MAX_RETRY_AFTER_S)


class Gate(ABC):
    """One pool's gate. Async methods are the gateway's; sync ones the workers'."""

    @abstractmethod
    async def enter(self, ticket: Ticket) -> Entry:
        """Seat the ticket, queue it, or refuse it (see `Verdict`)."""

    @abstractmethod
    async def wait_seat(self, request_id: str, timeout_s: float) -> bool:
        """Wait until a QUEUED ticket is seated; False on timeout (it is still queued:
        call `leave`). Raises `TicketLapsed` if the gate dropped it meanwhile."""

    @abstractmethod
    async def leave(self, request_id: str, cost: float | None = None) -> None:
        """Give the seat back (charging `cost`, the service the request really received,
        in place of its reservation) or leave the queue. Idempotent."""

    @abstractmethod
    def release(self, request_id: str, cost: float) -> None:
        """(The worker.) The engine is done with the request: its seat goes to the next
        waiter now, charged `cost` (the service it received), not once its usage is stored
        and its answer has reached the gateway (measured under a flood: a third of a seat's
        time). The gateway's later `leave` then changes nothing, and its lease refresh does
        not put the seat back."""

    @abstractmethod
    async def refresh(self, seated: list[Ticket], queued: list[str]) -> set[str]:
        """Extend the leases of the seats and queued tickets this gateway holds (see
        `LEASE_S`). A seat the gate lost (its store restarted empty, or it lapsed while
        this gateway stalled) is put back: the request still runs; one its worker gave
        back (`release`) is not. Returns the queued ids
        the gate lost: their requests must enter again."""

    @abstractmethod
    def lapsed(self, request_ids: list[str]) -> set[str]:
        """Which of these requests no longer hold a seat: their gateway stopped renewing it
        (it died, or lost its client and Redis at once). Their worker aborts them."""

    @abstractmethod
    def heartbeat(self, worker: str, capacity: int, weights: dict[str, float]) -> None:
        """A worker is alive and holds `capacity` requests; here are the tenants' weights."""

    @abstractmethod
    def retire(self, worker: str) -> None:
        """A worker stops: its capacity leaves the pool now."""

    @abstractmethod
    def state(self) -> GateState: ...

    def close(self) -> None:
        return None
