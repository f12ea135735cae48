"""Virtual time of a fluid fair-sharing (GPS) reference system.

In generalized processor sharing every backlogged flow i is served at rate
`w_i / sum(w_j)` of the resource at once. Virtual time V counts service per
unit of weight: while the set B of backlogged flows is fixed, work W
delivered by the server moves V by `W / sum_{j in B} w_j`, and flow i, which
entered at V = S_i with cost C_i, leaves the reference when V reaches its
virtual finish `F_i = S_i + C_i / w_i`.

The clock here is driven by the work the real engine actually delivers
(KV token-steps), not by wall time, so the reference shares exactly the
capacity the engine had, whatever its efficiency (self-clocked, as in
start-time fair queuing). It is exact for any split of the work into
`advance` calls: departures inside a call are found in order.
"""

from __future__ import annotations

from scheduler_core.tenant_heap import TenantHeap


class VirtualClock:
    """GPS virtual time over the flows that are backlogged in the reference."""

    __slots__ = ("now", "_finish", "_weights", "_weight_sum", "_heap")

    def __init__(self) -> None:
        self.now = 0.0
        self._finish: dict[str, float] = {}
        self._weights: dict[str, float] = {}
        self._weight_sum = 0.0
        self._heap = TenantHeap()

    def __contains__(self, flow: object) -> bool:
        return flow in self._finish

    def __len__(self) -> int:
        return len(self._finish)

    @property
    def weight_sum(self) -> float:
        return self._weight_sum

    def finish_of(self, flow: str) -> float | None:
        return self._finish.get(flow)

    def set(self, flow: str, finish: float, weight: float) -> None:
        """Make `flow` backlogged until V reaches `finish` (or drop it if V already has)."""
        if not weight > 0:
            raise ValueError(f"flow {flow!r}: weight must be > 0, got {weight}")
        self.discard(flow)
        if finish <= self.now:
            return
        self._finish[flow] = finish
        self._weights[flow] = weight
        self._weight_sum += weight
        self._heap.push(flow, finish)

    def discard(self, flow: str) -> None:
        if self._finish.pop(flow, None) is None:
            return
        self._weight_sum -= self._weights.pop(flow)
        self._heap.discard(flow)
        if not self._finish:
            self._weight_sum = 0.0  # no drift carried across idle periods

    def advance(self, work: float) -> list[tuple[str, float]]:
        """Deliver `work` units of service; return the flows that left, in order,
        each with how much of `work` had been delivered when it left.

        With nobody backlogged the reference is idle and V stands still.
        """
        if work < 0:
            raise ValueError(f"work must be >= 0, got {work}")
        departed: list[tuple[str, float]] = []
        used = 0.0
        while self._finish:
            flow = self._heap.peek()
            assert flow is not None
            finish = self._finish[flow]
            room = (finish - self.now) * self._weight_sum
            if work < room:
                self.now += work / self._weight_sum
                break
            # Flows with equal finishes all leave when V reaches it.
            work -= room
            used += room
            self.now = finish
            self.discard(flow)
            departed.append((flow, used))
        return departed
