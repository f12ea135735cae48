"""The fair gate in this process's memory (embedded mode), the same algorithm as Redis's.

`PoolBook` is the algorithm on plain data, under one lock; `LocalGate` adds the asyncio
side: a queued ticket's grant resolves a future on the loop that waits for it.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from scheduler_core.tenant_heap import TenantHeap
from wire.gate import (
    HEADROOM,
    LEASE_S,
    NO_WORKER_GRACE_S,
    PAUSE_S,
    REFRESH_S,
    RELEASED_KEEP_S,
    WORKER_TTL_S,
    Entry,
    Gate,
    GateState,
    TenantGateState,
    Ticket,
    TicketLapsed,
    Verdict,
    retry_after,
    split_held,
)

HOLD_EWMA = 0.1  # weight of the newest seat time in the pool's mean


@dataclass(slots=True)
class _Queued:
    ticket: Ticket
    seq: int
    deadline: float


@dataclass(slots=True)
class _Seat:
    tenant: str
    cost: float
    granted_at: float
    deadline: float


class PoolBook:
    """One pool's seats, queues and counters. Not thread-safe: `LocalGate` locks it."""

    def __init__(self) -> None:
        self.workers: dict[str, tuple[int, float]] = {}  # worker -> (capacity, expires)
        self.last_worker_seen = -1e18
        self.seats: dict[str, _Seat] = {}
        self.num_seats: dict[str, int] = {}  # per tenant
        self.queues: dict[str, deque[_Queued]] = {}
        self.queued: dict[str, _Queued] = {}
        self.counters: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.waiting = TenantHeap()  # backlogged tenants by (counter, head sequence)
        self.last_leaver: str | None = None
        self.released: dict[str, float] = {}  # seats their workers gave back -> when
        self.hold_s = 1.0
        self._seq = itertools.count(1)

    # -- what the gateway asks ------------------------------------------------------
    def enter(self, ticket: Ticket, now: float) -> tuple[Entry, list[str]]:
        """The entry for `ticket`, and the other requests seated meanwhile. Entering again
        (a retry) changes nothing and gives the same answer."""
        self.reap(now)
        if ticket.request_id in self.seats:
            return Entry(Verdict.SEATED), []
        if ticket.request_id in self.queued:
            return Entry(Verdict.QUEUED, len(self.queues[ticket.tenant])), []
        if self.capacity() == 0 and now - self.last_worker_seen > NO_WORKER_GRACE_S:
            return Entry(Verdict.NO_WORKERS), []
        self.weights[ticket.tenant] = ticket.weight
        queue = self.queues.get(ticket.tenant, deque())
        if self.num_seated(ticket.tenant) + len(queue) >= ticket.tenant_limit:
            return Entry(Verdict.TENANT_LIMIT), []
        if len(queue) >= ticket.queue_limit:
            wait = retry_after(len(queue), self.num_seated(ticket.tenant), self.hold_s)
            return Entry(Verdict.QUEUE_FULL, len(queue), wait), []
        self._enqueue(ticket, now)
        granted = self.dispatch(now)
        if ticket.request_id not in granted:
            granted += self.seat_under_share(ticket.tenant, now)
        if ticket.request_id in granted:
            granted.remove(ticket.request_id)
            return Entry(Verdict.SEATED), granted
        return Entry(Verdict.QUEUED, len(self.queues[ticket.tenant])), granted

    def leave(self, request_id: str, cost: float | None, now: float) -> list[str]:
        seat = self._unseat(request_id)
        if seat is not None:
            self._give_back(seat, cost, now)
            return self.dispatch(now)
        entry = self.queued.pop(request_id, None)
        if entry is not None:
            queue = self.queues[entry.ticket.tenant]
            head = queue[0]
            queue.remove(entry)
            if not queue:
                self._flow_left(entry.ticket.tenant)
            elif head is entry:
                self._push_waiting(entry.ticket.tenant)
        return []

    def release(self, request_id: str, cost: float, now: float) -> list[str]:
        """The worker gives the seat back (see `Gate.release`)."""
        self.reap(now)
        seat = self._unseat(request_id)
        if seat is None:
            return []
        self._give_back(seat, cost, now)
        self.released[request_id] = now
        return self.dispatch(now)

    def refresh(self, seated: list[Ticket], queued: list[str], now: float) -> set[str]:
        """Extend these leases, putting back a seat the book lost; returns the queued ids
        it no longer holds (see `Gate.refresh`)."""
        for ticket in seated:
            if ticket.request_id in self.released:
                continue
            seat = self.seats.get(ticket.request_id)
            if seat is None:
                seat = _Seat(ticket.tenant, ticket.cost, now, now)
                self.seats[ticket.request_id] = seat
                self.num_seats[ticket.tenant] = self.num_seated(ticket.tenant) + 1
            seat.deadline = now + LEASE_S
        missing = set()
        for rid in queued:
            held = self.queued.get(rid) or self.seats.get(rid)
            if held is None:
                missing.add(rid)
            else:
                held.deadline = now + LEASE_S
        return missing

    def shift_leases(self, by_s: float) -> None:
        """Move every lease on by a stretch in which nobody could renew one."""
        for seat in self.seats.values():
            seat.deadline += by_s
        for entry in self.queued.values():
            entry.deadline += by_s
        for worker, (capacity, expires) in self.workers.items():
            self.workers[worker] = (capacity, expires + by_s)

    def lapsed(self, request_ids: list[str], now: float) -> set[str]:
        self.reap(now)
        return {rid for rid in request_ids if rid not in self.seats}

    # -- what the workers say -----------------------------------------------------------
    def heartbeat(
        self, worker: str, capacity: int, weights: dict[str, float], now: float
    ) -> list[str]:
        self.workers[worker] = (capacity, now + WORKER_TTL_S)
        self.last_worker_seen = now
        self.weights.update(weights)
        self.reap(now)
        return self.dispatch(now)

    def retire(self, worker: str) -> None:
        self.workers.pop(worker, None)

    # -- the algorithm ---------------------------------------------------------------------
    def capacity(self) -> int:
        return sum(capacity for capacity, _ in self.workers.values())

    def num_seated(self, tenant: str) -> int:
        return self.num_seats.get(tenant, 0)

    def dispatch(self, now: float) -> list[str]:
        """Seat waiting tickets while there is room, least counter first."""
        granted: list[str] = []
        while len(self.seats) < self.capacity() and len(self.waiting):
            tenant = self.waiting.peek()
            assert tenant is not None
            granted.append(self._seat_head(tenant, now))
        return granted

    def seat_under_share(self, tenant: str, now: float) -> list[str]:
        """The headroom (see `HEADROOM`): a full pool still seats the tenant's next request
        if it holds less than its weighted share of the capacity, among the tenants that
        hold seats or wait, while the seats stay within the headroom."""
        capacity = self.capacity()
        if len(self.seats) >= math.floor(capacity * (1 + HEADROOM)) or tenant not in self.queues:
            return []
        active = {t for t, n in self.num_seats.items() if n > 0} | set(self.queues)
        total = sum(self.weights.get(t, 1.0) for t in active)
        share = capacity * self.weights.get(tenant, 1.0) / total
        if self.num_seated(tenant) + 1 > share:
            return []
        return [self._seat_head(tenant, now)]

    def _seat_head(self, tenant: str, now: float) -> str:
        entry = self.queues[tenant].popleft()
        del self.queued[entry.ticket.request_id]
        self.seats[entry.ticket.request_id] = _Seat(tenant, entry.ticket.cost, now, entry.deadline)
        self.num_seats[tenant] = self.num_seated(tenant) + 1
        if not self.queues[tenant]:
            self._flow_left(tenant)
        self._charge(tenant, entry.ticket.cost)  # moves the tenant if it still waits
        return entry.ticket.request_id

    def reap(self, now: float) -> None:
        for worker in [w for w, (_, expires) in self.workers.items() if expires <= now]:
            del self.workers[worker]
        for rid in [rid for rid, seat in self.seats.items() if seat.deadline <= now]:
            self._unseat(rid)
        for rid in [rid for rid, entry in self.queued.items() if entry.deadline <= now]:
            self.leave(rid, None, now)
        for rid in [rid for rid, at in self.released.items() if at <= now - RELEASED_KEEP_S]:
            del self.released[rid]

    def _unseat(self, request_id: str) -> _Seat | None:
        seat = self.seats.pop(request_id, None)
        if seat is not None:
            self.num_seats[seat.tenant] -= 1
            if not self.num_seats[seat.tenant]:
                del self.num_seats[seat.tenant]  # active tenants only
        return seat

    def _give_back(self, seat: _Seat, cost: float | None, now: float) -> None:
        if cost is not None:
            self._charge(seat.tenant, cost - seat.cost)
        self.hold_s += HOLD_EWMA * (now - seat.granted_at - self.hold_s)

    def _enqueue(self, ticket: Ticket, now: float) -> None:
        entry = _Queued(ticket, next(self._seq), now + LEASE_S)
        queue = self.queues.setdefault(ticket.tenant, deque())
        queue.append(entry)
        self.queued[ticket.request_id] = entry
        if len(queue) == 1:
            self._lift(ticket.tenant)
            self._push_waiting(ticket.tenant)

    def _lift(self, tenant: str) -> None:
        floor = self.waiting.min_key()
        if floor is None and self.last_leaver is not None:
            floor = self.counters.get(self.last_leaver, 0.0)
        if floor is not None and floor > self.counters.get(tenant, 0.0):
            self.counters[tenant] = floor

    def _charge(self, tenant: str, cost: float) -> None:
        weight = self.weights.get(tenant, 1.0)
        self.counters[tenant] = self.counters.get(tenant, 0.0) + cost / weight
        if tenant in self.waiting:
            self._push_waiting(tenant)

    def _push_waiting(self, tenant: str) -> None:
        head = self.queues[tenant][0]
        self.waiting.push(tenant, self.counters.get(tenant, 0.0), tie=head.seq)

    def _flow_left(self, tenant: str) -> None:
        self.waiting.discard(tenant)
        del self.queues[tenant]
        self.last_leaver = tenant

    def state(self) -> GateState:
        tenants = set(self.counters) | set(self.queues) | set(self.weights)
        return GateState(
            capacity=self.capacity(),
            num_seated=len(self.seats),
            workers={w: capacity for w, (capacity, _) in self.workers.items()},
            tenants={
                t: TenantGateState(
                    self.weights.get(t, 1.0),
                    self.counters.get(t, 0.0),
                    self.num_seated(t),
                    len(self.queues.get(t, ())),
                )
                for t in sorted(tenants)
            },
        )


class LocalGate(Gate):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._book = PoolBook()
        self._last_call: float | None = None
        self._waiters: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[bool]]] = {}
        # What each event loop holds, and its lease keeper: as in `RedisGate`, the gateway
        # renews its leases (a loop blocked for a whole lease lets them lapse).
        self._held: dict[str, tuple[asyncio.AbstractEventLoop, Ticket]] = {}
        self._keepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]]
        self._keepers = weakref.WeakKeyDictionary()

    def _now(self) -> float:
        """The clock, after forgiving a pause (as the Redis gate does: `forgive_pause`).
        Called under the lock."""
        now = self._clock()
        if self._last_call is not None and now - self._last_call > PAUSE_S:
            self._book.shift_leases(now - self._last_call)
        self._last_call = now
        return now

    async def enter(self, ticket: Ticket) -> Entry:
        loop = asyncio.get_running_loop()
        if loop not in self._keepers:
            self._keepers[loop] = loop.create_task(self._keep_leases(loop))
        with self._lock:
            entry, granted = self._book.enter(ticket, self._now())
            if entry.verdict is Verdict.QUEUED:
                self._waiters[ticket.request_id] = (loop, loop.create_future())
            if entry.verdict in (Verdict.SEATED, Verdict.QUEUED):
                self._held[ticket.request_id] = (loop, ticket)
        self._notify(granted)
        return entry

    async def _keep_leases(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            with self._lock:
                mine = (ticket for owner, ticket in self._held.values() if owner is loop)
                seated, queued = split_held(mine, self._waiters)
            for rid in await self.refresh(seated, queued):
                self._drop_lapsed(rid)

    def _drop_lapsed(self, request_id: str) -> None:
        with self._lock:
            self._held.pop(request_id, None)
            waiter = self._waiters.pop(request_id, None)
        if waiter is not None and not waiter[1].done():
            waiter[1].set_exception(TicketLapsed(request_id))

    async def wait_seat(self, request_id: str, timeout_s: float) -> bool:
        with self._lock:
            waiter = self._waiters.get(request_id)
            if waiter is None:
                return request_id in self._book.seats
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(waiter[1])
        except TimeoutError:
            return False

    async def leave(self, request_id: str, cost: float | None = None) -> None:
        with self._lock:
            self._waiters.pop(request_id, None)
            self._held.pop(request_id, None)
            granted = self._book.leave(request_id, cost, self._now())
        self._notify(granted)

    def release(self, request_id: str, cost: float) -> None:
        with self._lock:
            granted = self._book.release(request_id, cost, self._now())
        self._notify(granted)

    async def refresh(self, seated: list[Ticket], queued: list[str]) -> set[str]:
        with self._lock:
            return self._book.refresh(seated, queued, self._now())

    def lapsed(self, request_ids: list[str]) -> set[str]:
        with self._lock:
            return self._book.lapsed(request_ids, self._now())

    def heartbeat(self, worker: str, capacity: int, weights: dict[str, float]) -> None:
        with self._lock:
            granted = self._book.heartbeat(worker, capacity, weights, self._now())
        self._notify(granted)

    def retire(self, worker: str) -> None:
        with self._lock:
            self._book.retire(worker)

    def state(self) -> GateState:
        with self._lock:
            self._book.reap(self._now())
            return self._book.state()

    def _notify(self, granted: list[str]) -> None:
        with self._lock:
            waiters = [self._waiters.pop(rid, None) for rid in granted]
        for waiter in waiters:
            if waiter is not None:
                loop, future = waiter
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(True)
