"""Mergeable latency histograms: how rollup rows keep percentiles without keeping requests.

A percentile of a month cannot be computed from per-hour percentiles, but it can from
per-hour histograms, because histograms add. Buckets are log-scale, eight per doubling
(bucket `i` holds durations `d` with `floor(8 * log2(1 + d)) == i`, `d` in ms), so a
reported percentile is within 4.5% of the exact one at any magnitude, from 1 ms to hours.

A histogram is a JSON object mapping the bucket index (a string, as JSON keys are) to its
count, holding only non-empty buckets: a row with a handful of requests stores a handful
of entries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

Histogram = dict[str, int]

BUCKETS_PER_DOUBLING = 8


def bucket_of(ms: float) -> int:
    """The bucket of a duration in milliseconds (negative durations count as 0)."""
    return int(BUCKETS_PER_DOUBLING * math.log2(1.0 + max(0.0, ms)))


def bucket_value(index: int) -> float:
    """The duration a bucket reports: its geometric middle, in ms."""
    return float(2.0 ** ((index + 0.5) / BUCKETS_PER_DOUBLING) - 1.0)


def of(durations_ms: Iterable[float | None]) -> Histogram:
    """The histogram of these durations; None (a request with no TTFT) is left out."""
    hist: Histogram = {}
    for ms in durations_ms:
        if ms is not None:
            key = str(bucket_of(ms))
            hist[key] = hist.get(key, 0) + 1
    return hist


def add(into: Histogram, other: Mapping[str, int] | None) -> Histogram:
    """Add `other`'s counts into `into` (in place) and return it."""
    for key, count in (other or {}).items():
        into[key] = into.get(key, 0) + int(count)
    return into


def merged(histograms: Iterable[Mapping[str, int] | None]) -> Histogram:
    total: Histogram = {}
    for hist in histograms:
        add(total, hist)
    return total


def quantile(hist: Mapping[str, int] | None, q: float) -> float | None:
    """The `q`-quantile (0 < q <= 1) by nearest rank, in ms to 0.1; None when empty."""
    return quantiles(hist, (q,))[0]


def quantiles(hist: Mapping[str, int] | None, qs: Sequence[float]) -> list[float | None]:
    """Several quantiles of one histogram (each by nearest rank, in ms to 0.1), one pass."""
    if any(not 0.0 < q <= 1.0 for q in qs):
        raise ValueError(f"quantiles must be in (0, 1], got {list(qs)}")
    counts = sorted((int(key), count) for key, count in (hist or {}).items() if count)
    total = sum(count for _, count in counts)
    if total == 0:
        return [None] * len(qs)
    ranks = [math.ceil(q * total) for q in qs]
    found: list[float | None] = [None] * len(qs)
    seen = 0
    for index, count in counts:
        seen += count
        for i, rank in enumerate(ranks):
            if found[i] is None and seen >= rank:
                found[i] = round(bucket_value(index), 1)
    return found
