"""The simulator's side of the waiting queue: each waiting request's progress,
with the smallest KV need and the smallest request shape at hand."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from scheduler_core.sim.batch import Seq

_Heap = list[tuple[int, int, str]]


def remaining_tokens(seq: Seq) -> int:
    """Output tokens `seq` may still produce (its max_tokens budget)."""
    return seq.job.max_tokens - seq.num_output


def held_tokens(seq: Seq) -> int:
    """Tokens `seq` holds in KV once (re)admitted and prefilled."""
    return seq.job.prompt_tokens + seq.num_output


class WaitingRoom:
    """Waiting sequences by request id; the minima are O(log n) amortised.

    The minima give exact shortcuts: when a request with the smallest need
    (or the smallest remaining and held tokens of any waiting request,
    combined) cannot fit, no waiting request can, so the policy need not be
    consulted at all.
    """

    __slots__ = ("_seqs", "_need_of", "_needs", "_remaining", "_held", "_stamps")

    def __init__(self) -> None:
        self._seqs: dict[str, Seq] = {}
        self._need_of: dict[str, int] = {}
        self._needs: _Heap = []
        self._remaining: _Heap = []
        self._held: _Heap = []
        self._stamps = itertools.count()

    def add(self, seq: Seq, num_blocks: int) -> None:
        request_id = seq.job.request_id
        self._seqs[request_id] = seq
        self._need_of[request_id] = num_blocks
        stamp = next(self._stamps)
        heapq.heappush(self._needs, (num_blocks, stamp, request_id))
        heapq.heappush(self._remaining, (remaining_tokens(seq), stamp, request_id))
        heapq.heappush(self._held, (held_tokens(seq), stamp, request_id))

    def take(self, request_id: str) -> Seq:
        del self._need_of[request_id]
        return self._seqs.pop(request_id)

    def get(self, request_id: str) -> Seq:
        return self._seqs[request_id]

    def min_need(self) -> int:
        """The fewest blocks any waiting request needs (0 when none waits)."""
        return self._min(self._needs, lambda rid: self._need_of.get(rid))

    def min_shape(self) -> tuple[int, int]:
        """(fewest remaining tokens, fewest held tokens) over waiting requests."""
        remaining = self._min(self._remaining, lambda rid: remaining_tokens(self._seqs[rid]))
        held = self._min(self._held, lambda rid: held_tokens(self._seqs[rid]))
        return remaining, held

    def _min(self, heap: _Heap, current: Callable[[str], int | None]) -> int:
        # An entry is live while its request waits with the value it was pushed with.
        while heap and (heap[0][2] not in self._seqs or current(heap[0][2]) != heap[0][0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else 0
