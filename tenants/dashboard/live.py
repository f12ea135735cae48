"""The overview's live fairness numbers, computed from the workers' published states.

Pure functions over the state dicts of `EngineHost.state()` (with the scheduler's
`fair_state()` inside): no Redis, no clock. "Now" is the newest `published_at` seen, so
the numbers depend only on the states given.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

State = Mapping[str, Any]

WINDOWS_S = (60, 300, 900, 3600)
DEFAULT_WINDOW_S = 300
# A line chart stays readable at a few hundred points; longer windows get wider buckets.
MAX_POINTS = 300


@dataclass(frozen=True, slots=True)
class TenantLive:
    tenant: str
    weight: float
    weight_share: float
    served_tokens: int
    served_share: float
    num_waiting: int
    num_running: int


@dataclass(frozen=True, slots=True)
class WorkerLive:
    worker: str
    model: str
    policy: str
    published_at: float
    num_in_flight: int
    num_waiting: int
    num_running: int
    kv_blocks_used: int
    kv_blocks_total: int


@dataclass(frozen=True, slots=True)
class ThroughputPoint:
    time: float  # the bucket's start, unix seconds
    tokens_per_s: float
    tenants: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LiveView:
    window_s: int
    bucket_s: int
    now: float | None
    served_tokens: int
    workers: list[WorkerLive]
    tenants: list[TenantLive]
    throughput: list[ThroughputPoint]


def history_limit(window_s: int) -> int:
    """How many history entries cover the window: workers publish up to twice a second."""
    return 2 * window_s + 10


def bucket_width(window_s: int) -> int:
    return max(1, -(-window_s // MAX_POINTS))


def live_view(
    latest: Mapping[str, State], histories: Mapping[str, Sequence[State]], window_s: int
) -> LiveView:
    """The overview for the workers in `latest`, over the last `window_s` of their history."""
    if window_s <= 0:
        raise ValueError("window_s must be positive")
    bucket_s = bucket_width(window_s)
    if not latest:
        return LiveView(window_s, bucket_s, None, 0, [], [], [])
    now = max(published_at(state) for state in latest.values())
    since = now - window_s
    served: dict[str, int] = defaultdict(int)
    for worker in latest:
        for tenant, tokens in served_tokens(histories.get(worker, ()), since).items():
            served[tenant] += tokens
    series = [throughput(histories.get(worker, ()), since, bucket_s) for worker in latest]
    return LiveView(
        window_s=window_s,
        bucket_s=bucket_s,
        now=now,
        served_tokens=sum(served.values()),
        workers=[worker_live(name, state) for name, state in sorted(latest.items())],
        tenants=tenant_rows(latest, served),
        throughput=merge_series(series),
    )


def published_at(state: State) -> float:
    scheduler = state.get("scheduler") or {}
    return float(state.get("published_at") or scheduler.get("timestamp") or 0.0)


def tenant_counters(state: State) -> dict[str, Mapping[str, Any]]:
    return dict((state.get("scheduler") or {}).get("tenants") or {})


def cumulative_tokens(state: State) -> dict[str, int]:
    """Tokens served so far per tenant (input + output), as the scheduler counts them."""
    return {
        tenant: int(c.get("input_tokens", 0)) + int(c.get("output_tokens", 0))
        for tenant, c in tenant_counters(state).items()
    }


def counter_delta(before: int, after: int) -> int:
    # A counter only grows while its worker lives: a smaller value is a fresh process.
    return after - before if after >= before else after


def step_deltas(before: State, after: State) -> dict[str, int]:
    old, new = cumulative_tokens(before), cumulative_tokens(after)
    return {tenant: counter_delta(old.get(tenant, 0), tokens) for tenant, tokens in new.items()}


def served_tokens(history: Sequence[State], since: float) -> dict[str, int]:
    """Tokens served per tenant after `since`, from one worker's history (oldest first).

    The baseline is the last entry at or before `since` (the oldest one when the history is
    shorter than the window); deltas are summed step by step so that a restart in between
    is counted from zero, not lost.
    """
    if not history:
        return {}
    start = _baseline_index(history, since)
    served: dict[str, int] = defaultdict(int)
    for before, after in zip(history[start:], history[start + 1 :], strict=False):
        for tenant, tokens in step_deltas(before, after).items():
            served[tenant] += tokens
    return dict(served)


def _baseline_index(history: Sequence[State], since: float) -> int:
    start = 0
    for index, state in enumerate(history):
        if published_at(state) <= since:
            start = index
        else:
            break
    return start


def throughput(history: Sequence[State], since: float, bucket_s: int) -> list[ThroughputPoint]:
    """One worker's tokens/s per bucket: each step's rate, averaged over its bucket."""
    rates: dict[float, list[dict[str, float]]] = defaultdict(list)
    for before, after in zip(history, history[1:], strict=False):
        t0, t1 = published_at(before), published_at(after)
        if t1 <= since or t1 <= t0:
            continue
        dt = t1 - t0
        bucket = float(int(t1 // bucket_s) * bucket_s)
        rates[bucket].append({t: n / dt for t, n in step_deltas(before, after).items()})
    return [_mean_point(time, steps) for time, steps in sorted(rates.items())]


def _mean_point(time: float, steps: list[dict[str, float]]) -> ThroughputPoint:
    sums: dict[str, float] = defaultdict(float)
    for step in steps:
        for tenant, rate in step.items():
            sums[tenant] += rate
    tenants = {tenant: total / len(steps) for tenant, total in sorted(sums.items())}
    return ThroughputPoint(time, sum(tenants.values()), tenants)


def merge_series(series: Sequence[Sequence[ThroughputPoint]]) -> list[ThroughputPoint]:
    """Several workers' series summed bucket by bucket."""
    merged: dict[float, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for points in series:
        for point in points:
            for tenant, rate in point.tenants.items():
                merged[point.time][tenant] += rate
    return [
        ThroughputPoint(time, sum(rates.values()), dict(sorted(rates.items())))
        for time, rates in sorted(merged.items())
    ]


def worker_live(name: str, state: State) -> WorkerLive:
    scheduler = state.get("scheduler") or {}
    return WorkerLive(
        worker=str(state.get("worker") or name),
        model=str(state.get("model") or ""),
        policy=str(scheduler.get("policy") or state.get("policy") or ""),
        published_at=published_at(state),
        num_in_flight=int(state.get("num_in_flight") or 0),
        num_waiting=int(scheduler.get("num_waiting") or 0),
        num_running=int(scheduler.get("num_running") or 0),
        kv_blocks_used=int(scheduler.get("kv_blocks_used") or 0),
        kv_blocks_total=int(scheduler.get("kv_blocks_total") or 0),
    )


def tenant_rows(latest: Mapping[str, State], served: Mapping[str, int]) -> list[TenantLive]:
    """Per tenant the scheduler knows: weight and served shares, queue depth."""
    weights: dict[str, float] = {}
    directory: dict[str, float] = {}
    queues: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    # Oldest first, so the freshest worker's view of a weight wins.
    for state in sorted(latest.values(), key=published_at):
        directory.update({t: float(w) for t, w in (state.get("weights") or {}).items()})
        for tenant, counters in tenant_counters(state).items():
            weights[tenant] = float(counters.get("weight", directory.get(tenant, 1.0)))
            queues[tenant][0] += int(counters.get("num_waiting", 0))
            queues[tenant][1] += int(counters.get("num_running", 0))
    for tenant in served:  # served in the window, gone from the scheduler since
        weights.setdefault(tenant, directory.get(tenant, 1.0))
    total_weight = sum(weights.values())
    total_served = sum(served.values())
    return [
        TenantLive(
            tenant=tenant,
            weight=weight,
            weight_share=_share(weight, total_weight),
            served_tokens=served.get(tenant, 0),
            served_share=_share(served.get(tenant, 0), total_served),
            num_waiting=queues[tenant][0],
            num_running=queues[tenant][1],
        )
        for tenant, weight in sorted(weights.items())
    ]


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0
