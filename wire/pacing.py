"""Token events paced per request, so that a fast engine cannot flood a gateway.

A small model on a CPU makes ~1,000 tokens a second for one request; a GPU serving
hundreds of streams makes tens of thousands. One event per token costs the gateway a
parse, a decode and a write each, on one event loop: seen here, a single 30,000-token
stream of the tiny model kept a gateway's loop busy for tens of seconds, so long that
other tenants' requests waited to be accepted and the gate's leases lapsed.

So a request's deltas leave at most once per `DELTA_INTERVAL_S`: its first delta (the
client's first token) and any event after a quiet spell leave at once; deltas that come
sooner after the last one sent are held and leave as one (text joined, tokens summed)
when the interval is up, or just before the request's next other event (`done`, …), which
never waits. A reader then sees at most 1 / DELTA_INTERVAL_S chunks a second per stream,
faster than anyone reads; the order of each request's events is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from wire.channels import Event
from wire.protocol import EventType, coalesce_deltas

DELTA_INTERVAL_S = 0.02
PRUNE_EVERY_S = 1.0

# (request id, the inbox it goes to, the event)
Outgoing = tuple[str, str, Event]


class DeltaPacer:
    def __init__(
        self,
        interval_s: float = DELTA_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._last_sent: dict[str, float] = {}  # request id -> when its last delta left
        self._held: dict[str, tuple[str, list[Event]]] = {}  # request id -> (inbox, deltas)
        self._due: dict[str, float] = {}
        self._next_prune = 0.0
        self.num_held = 0  # events held (before merging): not yet written

    def admit(self, items: list[Outgoing]) -> list[Outgoing]:
        """What of `items` (and of what was held) leaves now, in each request's order."""
        now = self.clock()
        out: list[Outgoing] = []
        for request_id, inbox, event in items:
            if event["type"] == EventType.DELTA.value:
                if not self._hold(request_id, inbox, event, now):
                    self._last_sent[request_id] = now
                    out.append((request_id, inbox, event))
                continue
            out.extend(self._release(request_id, now))
            out.append((request_id, inbox, event))
            if event["type"] in (EventType.DONE.value, EventType.ERROR.value):
                self._last_sent.pop(request_id, None)
        out.extend(self.due())
        return out

    def due(self) -> list[Outgoing]:
        """The held deltas whose interval is up."""
        now = self.clock()
        out: list[Outgoing] = []
        for request_id in [rid for rid, due in self._due.items() if due <= now]:
            out.extend(self._release(request_id, now))
        if now >= self._next_prune:
            self._prune(now)
        return out

    def wait_s(self) -> float | None:
        """How long until held deltas are due (None: nothing is held)."""
        if not self._due:
            return None
        return max(0.0, min(self._due.values()) - self.clock())

    def release_all(self) -> list[Outgoing]:
        now = self.clock()
        out: list[Outgoing] = []
        for request_id in list(self._held):
            out.extend(self._release(request_id, now))
        return out

    def _hold(self, request_id: str, inbox: str, event: Event, now: float) -> bool:
        held = self._held.get(request_id)
        if held is not None:
            held[1].append(event)
            self.num_held += 1
            return True
        last = self._last_sent.get(request_id)
        if last is None or now - last >= self.interval_s:
            return False
        self._held[request_id] = (inbox, [event])
        self._due[request_id] = last + self.interval_s
        self.num_held += 1
        return True

    def _release(self, request_id: str, now: float) -> list[Outgoing]:
        held = self._held.pop(request_id, None)
        if held is None:
            return []
        del self._due[request_id]
        inbox, deltas = held
        self.num_held -= len(deltas)
        self._last_sent[request_id] = now
        return [(request_id, inbox, event) for event in coalesce_deltas(deltas)]

    def _prune(self, now: float) -> None:
        # A request whose last delta left an interval ago holds nothing back: forget it
        # (one that ended without `done`, aborted at its gateway, would otherwise stay).
        self._next_prune = now + PRUNE_EVERY_S
        stale = [r for r, t in self._last_sent.items() if now - t >= self.interval_s]
        for request_id in stale:
            if request_id not in self._held:
                del self._last_sent[request_id]
