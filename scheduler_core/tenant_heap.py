"""A min-heap of tenants whose keys change often: lazy invalidation.

Updating a tenant's key pushes a fresh entry and leaves the old one behind;
stale entries are skipped when they reach the top. Every operation is
O(log n) amortised in the number of tenants, with no scan.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Mapping

# Rebuild once stale entries outnumber live ones by this factor, so memory
# stays O(live tenants) even when keys change every engine step.
_COMPACT_FACTOR = 2
_COMPACT_MIN = 64

# (key, tie, stamp, tenant): plain tuples compare fast and the unique stamp
# guarantees the tenant string is never the deciding field.
_Entry = tuple[float, float, int, str]


class TenantHeap:
    """Tenants ordered by `(key, tie, stamp)`: smallest first.

    `tie` defaults to the insertion stamp, so equal keys are served in the
    order their entries were last pushed; the order never depends on hashing
    or object identity.
    """

    __slots__ = ("_heap", "_live", "_stamps")

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._live: dict[str, _Entry] = {}
        self._stamps = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, tenant: object) -> bool:
        return tenant in self._live

    def push(self, tenant: str, key: float, tie: float | None = None) -> None:
        """Insert `tenant`, or move it to `key` if already present."""
        stamp = next(self._stamps)
        entry = (key, float(stamp) if tie is None else tie, stamp, tenant)
        self._live[tenant] = entry
        heapq.heappush(self._heap, entry)
        if len(self._heap) > _COMPACT_FACTOR * len(self._live) + _COMPACT_MIN:
            self._compact()

    def discard(self, tenant: str) -> None:
        """Remove `tenant` if present."""
        self._live.pop(tenant, None)

    def peek(self) -> str | None:
        """The tenant with the smallest key, or None when empty."""
        entry = self._top()
        return None if entry is None else entry[3]

    def refreshed_peek(
        self, key_of: Callable[[str], float], ties: Mapping[str, float]
    ) -> str | None:
        """The smallest tenant by its key `key_of(tenant)`, where each stored key is a
        lower bound of it: stale entries are re-keyed in place on their way to the top.

        For keys that only rise between pushes (a fall must be pushed at once), this
        touches only the tenants whose bound is below the true minimum.
        """
        heap, live = self._heap, self._live
        while heap:
            entry = heap[0]
            tenant = entry[3]
            if live.get(tenant) is not entry:
                heapq.heappop(heap)
                continue
            key = key_of(tenant)
            if key <= entry[0]:
                return tenant
            stamp = next(self._stamps)
            fresh = (key, ties[tenant], stamp, tenant)
            live[tenant] = fresh
            heapq.heapreplace(heap, fresh)  # one sift, and no stale entry left behind
        return None

    def min_key(self) -> float | None:
        """The smallest key, or None when empty."""
        entry = self._top()
        return None if entry is None else entry[0]

    def ordered(self) -> list[str]:
        """All tenants, smallest key first (O(n log n); for iteration, not picking)."""
        return [entry[3] for entry in sorted(self._live.values())]

    def _top(self) -> _Entry | None:
        heap, live = self._heap, self._live
        while heap and live.get(heap[0][3]) is not heap[0]:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _compact(self) -> None:
        self._heap = list(self._live.values())
        heapq.heapify(self._heap)
