"""The fast lanes between the API and the engine pool, apart from the broker.

- event streams: the worker publishes a request's tokens; the API reads them (SSE);
- aborts: the API asks, the worker that holds the request cancels it in the engine;
- once-only markers: delivery attempts and "usage recorded" per request id;
- the admission gate: requests in flight per tenant, and each tenant's weighted share of
  the pool's slots once the pool is full (so no backlog piles up in the broker's FIFO);
- live scheduler state, one entry per worker, for dashboards.

`RedisChannels` is production (and the test suite); `LocalChannels` keeps the same
contract inside one process, for the embedded mode, which runs the web server and the
worker together with no external service.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Event = dict[str, Any]
# A request that holds a slot longer than this is presumed lost with its API process.
SLOT_TTL_S = 30 * 60
STATE_TTL_S = 5.0
STATE_HISTORY = 3600  # about an hour of one-second states


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    reason: str = ""  # "tenant": over its own limit; "pool": over its share of a full pool
    retry_after_s: int = 1


@dataclass(frozen=True, slots=True)
class SlotRequest:
    tenant: str
    request_id: str
    weight: float
    tenant_limit: int
    pool_slots: int


def weighted_share(pool_slots: int, weight: float, total_weight: float) -> int:
    """A tenant's slots in a full pool: its weight's share, at least one."""
    return max(1, math.ceil(pool_slots * weight / total_weight))


class Channels(ABC):
    """Contract shared by the Redis and in-process implementations."""

    # -- event streams ------------------------------------------------------------
    @abstractmethod
    def publish(self, request_id: str, event: Event) -> None:
        """Append an event to the request's stream (never blocks on the network)."""

    @abstractmethod
    def read(self, request_id: str, cursor: str, timeout_s: float) -> tuple[str, list[Event]]:
        """Events after `cursor` ("0" = from the start); waits up to `timeout_s` for one."""

    def flush(self) -> None:  # noqa: B027 - in-process channels have nothing to flush
        """Wait until every published event is readable."""

    @abstractmethod
    def discard(self, request_id: str) -> None:
        """The reader is done with the request's stream: free it."""

    # -- aborts ---------------------------------------------------------------------
    @abstractmethod
    def request_abort(self, request_id: str) -> None: ...

    @abstractmethod
    def abort_requested(self, request_id: str) -> bool: ...

    @abstractmethod
    def listen_aborts(self, callback: Callable[[str], None]) -> None:
        """Call `callback(request_id)` on a background thread for every abort asked."""

    def aborts_requested(self, request_ids: list[str]) -> set[str]:
        """Which of these requests have an abort asked (the sweep behind `listen_aborts`)."""
        return {rid for rid in request_ids if self.abort_requested(rid)}

    # -- once-only markers ---------------------------------------------------------
    @abstractmethod
    def next_attempt(self, request_id: str) -> int:
        """1 for the first delivery of a request, 2 for the next, and so on."""

    @abstractmethod
    def mark_done(self, request_id: str) -> bool:
        """Mark the request's usage as recorded; False if it already was."""

    @abstractmethod
    def is_done(self, request_id: str) -> bool: ...

    # -- admission gate --------------------------------------------------------------
    @abstractmethod
    def admit(self, slot: SlotRequest) -> Admission: ...

    @abstractmethod
    def release(self, tenant: str, request_id: str) -> None: ...

    @abstractmethod
    def in_flight(self, tenant: str) -> int: ...

    # -- live state -------------------------------------------------------------------
    @abstractmethod
    def publish_state(self, worker: str, state: dict[str, Any]) -> None: ...

    @abstractmethod
    def states(self) -> dict[str, dict[str, Any]]:
        """The latest state of every live worker (one that published in the last seconds)."""

    @abstractmethod
    def state_history(self, worker: str, limit: int = STATE_HISTORY) -> list[dict[str, Any]]:
        """A worker's recent states, oldest first: time series for dashboards and tests."""

    def close(self) -> None:
        return None


class LocalChannels(Channels):
    """Everything in this process's memory, guarded by one condition variable."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._streams: dict[str, list[Event]] = defaultdict(list)
        self._aborts: set[str] = set()
        self._abort_listeners: list[Callable[[str], None]] = []
        self._attempts: dict[str, int] = defaultdict(int)
        self._done: set[str] = set()
        self._slots: dict[str, dict[str, float]] = defaultdict(dict)  # tenant -> rid -> deadline
        self._weights: dict[str, float] = {}
        self._states: dict[str, tuple[float, dict[str, Any]]] = {}
        self._history: dict[str, deque[dict[str, Any]]] = defaultdict(
            lambda: deque(maxlen=STATE_HISTORY)
        )

    def publish(self, request_id: str, event: Event) -> None:
        with self._cond:
            self._streams[request_id].append(event)
            self._cond.notify_all()

    def read(self, request_id: str, cursor: str, timeout_s: float) -> tuple[str, list[Event]]:
        start = int(cursor)
        deadline = self._clock() + timeout_s
        with self._cond:
            while len(self._streams[request_id]) <= start:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return cursor, []
                self._cond.wait(remaining)
            events = self._streams[request_id][start:]
        return str(start + len(events)), events

    def discard(self, request_id: str) -> None:
        with self._cond:
            self._streams.pop(request_id, None)

    def request_abort(self, request_id: str) -> None:
        with self._cond:
            self._aborts.add(request_id)
            listeners = list(self._abort_listeners)
        for listener in listeners:
            listener(request_id)

    def abort_requested(self, request_id: str) -> bool:
        with self._cond:
            return request_id in self._aborts

    def listen_aborts(self, callback: Callable[[str], None]) -> None:
        with self._cond:
            self._abort_listeners.append(callback)

    def next_attempt(self, request_id: str) -> int:
        with self._cond:
            self._attempts[request_id] += 1
            return self._attempts[request_id]

    def mark_done(self, request_id: str) -> bool:
        with self._cond:
            first = request_id not in self._done
            self._done.add(request_id)
            return first

    def is_done(self, request_id: str) -> bool:
        with self._cond:
            return request_id in self._done

    def admit(self, slot: SlotRequest) -> Admission:
        with self._cond:
            self._expire_slots()
            mine = len(self._slots[slot.tenant])
            if mine >= slot.tenant_limit:
                return Admission(False, "tenant")
            total = sum(len(rids) for rids in self._slots.values())
            if total >= slot.pool_slots:
                active = {t: self._weights[t] for t, rids in self._slots.items() if rids}
                active[slot.tenant] = slot.weight
                share = weighted_share(slot.pool_slots, slot.weight, sum(active.values()))
                if mine >= share:
                    return Admission(False, "pool")
            self._slots[slot.tenant][slot.request_id] = self._clock() + SLOT_TTL_S
            self._weights[slot.tenant] = slot.weight
            return Admission(True)

    def release(self, tenant: str, request_id: str) -> None:
        with self._cond:
            self._slots[tenant].pop(request_id, None)

    def in_flight(self, tenant: str) -> int:
        with self._cond:
            self._expire_slots()
            return len(self._slots[tenant])

    def _expire_slots(self) -> None:
        now = self._clock()
        for rids in self._slots.values():
            for rid in [rid for rid, deadline in rids.items() if deadline <= now]:
                del rids[rid]

    def publish_state(self, worker: str, state: dict[str, Any]) -> None:
        with self._cond:
            self._states[worker] = (self._clock() + STATE_TTL_S, state)
            self._history[worker].append(state)

    def states(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        with self._cond:
            return {w: state for w, (expires, state) in self._states.items() if expires > now}

    def state_history(self, worker: str, limit: int = STATE_HISTORY) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._history[worker])[-limit:]
