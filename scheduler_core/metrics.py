"""Fairness and performance metrics over a run's request records.

Definitions (as in the VTC paper's artifact, fair_bench/plot/visualize.py):

- Service of a request = `cost(prompt, output)` (default `p + 2q`), spread
  uniformly over its service interval [first token, finish]; a request whose
  interval is empty counts as a point at its finish.
- Service rate of a tenant in a window = its service inside the window / window length.
- Demand rate = cost of the tenant's requests *arriving* in the window /
  window length (rejected requests count: they are demand that went unserved).
- Service difference at a window = sum over tenants j of
  `min(max_k S_k - S_j, |D_j - S_j|)`: how far each tenant is below the
  best-served tenant, but no further than its own unmet (or excess) demand.
  Windows: 60 s, centred at `warmup + (T - warmup) * i / 20` for
  i = 1..19, T = workload duration, warmup = 30 s. Max diff and avg diff are
  the maximum and mean over those windows (the paper's Table 2 and §5.3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler_core.costs import CostFunction, LinearCost
from scheduler_core.sim.records import RequestRecord, RequestStatus

FloatArray = npt.NDArray[np.float64]
DEFAULT_COST = LinearCost()


@dataclass(frozen=True, slots=True)
class DiffStats:
    max_diff: float
    avg_diff: float
    per_window: FloatArray


def paper_window_centers(
    duration_s: float, *, warmup_s: float = 30.0, num_ticks: int = 20
) -> FloatArray:
    """The window centres the paper evaluates (see the module docstring)."""
    steps = np.arange(1, num_ticks, dtype=np.float64)
    return warmup_s + (duration_s - warmup_s) / num_ticks * steps


def _tenant_matrix(records: Sequence[RequestRecord], tenants: Sequence[str]) -> FloatArray:
    """One-hot (requests x tenants), so per-tenant sums are a matrix product."""
    index = {tenant: i for i, tenant in enumerate(tenants)}
    matrix = np.zeros((len(records), len(tenants)))
    for row, record in enumerate(records):
        if record.tenant in index:
            matrix[row, index[record.tenant]] = 1.0
    return matrix


def service_in_intervals(
    records: Sequence[RequestRecord],
    tenants: Sequence[str],
    starts: FloatArray,
    ends: FloatArray,
    cost: CostFunction = DEFAULT_COST,
) -> FloatArray:
    """Service (cost units) each tenant received in each [start, end): (intervals x tenants)."""
    served = [r for r in records if r.first_token_s is not None and r.finish_s is not None]
    if not served:
        return np.zeros((len(starts), len(tenants)))
    begin = np.array([r.first_token_s for r in served], dtype=np.float64)
    finish = np.array([r.finish_s for r in served], dtype=np.float64)
    value = np.array([cost.total(r.prompt_tokens, r.output_tokens) for r in served])
    lo, hi = starts[:, None], ends[:, None]
    span = finish - begin
    overlap = np.clip(np.minimum(hi, finish) - np.maximum(lo, begin), 0.0, None)
    fraction = np.where(
        span > 0, overlap / np.where(span > 0, span, 1.0), (lo <= finish) & (finish < hi)
    )
    result: FloatArray = (fraction * value) @ _tenant_matrix(served, tenants)
    return result


def service_rates(
    records: Sequence[RequestRecord],
    tenants: Sequence[str],
    centers: FloatArray,
    window_s: float = 60.0,
    cost: CostFunction = DEFAULT_COST,
) -> FloatArray:
    """Service rate (cost/s) per window centred at `centers`: (windows x tenants)."""
    half = window_s / 2
    served = service_in_intervals(records, tenants, centers - half, centers + half, cost)
    return served / window_s


def demand_rates(
    records: Sequence[RequestRecord],
    tenants: Sequence[str],
    centers: FloatArray,
    window_s: float = 60.0,
    cost: CostFunction = DEFAULT_COST,
) -> FloatArray:
    """Requested cost per second, by arrival time, per window: (windows x tenants)."""
    if not records:
        return np.zeros((len(centers), len(tenants)))
    arrival = np.array([r.arrival_s for r in records])
    value = np.array([cost.total(r.prompt_tokens, r.requested_output_tokens) for r in records])
    lo, hi = centers[:, None] - window_s / 2, centers[:, None] + window_s / 2
    inside = (lo <= arrival) & (arrival <= hi)
    result: FloatArray = (inside * value) @ _tenant_matrix(records, tenants) / window_s
    return result


def service_difference(
    records: Sequence[RequestRecord],
    tenants: Sequence[str],
    duration_s: float,
    cost: CostFunction = DEFAULT_COST,
    weights: Mapping[str, float] | None = None,
) -> DiffStats:
    """The paper's max and average service difference (module docstring).

    With `weights`, service and demand are divided by each tenant's weight
    first, so a 1:2 split between weights 1 and 2 counts as equal service.
    """
    centers = paper_window_centers(duration_s)
    scale = np.array([(weights or {}).get(tenant, 1.0) for tenant in tenants])
    service = service_rates(records, tenants, centers, cost=cost) / scale
    demand = demand_rates(records, tenants, centers, cost=cost) / scale
    shortfall = service.max(axis=1, keepdims=True) - service
    per_window = np.minimum(shortfall, np.abs(demand - service)).sum(axis=1)
    return DiffStats(float(per_window.max()), float(per_window.mean()), per_window)


def accumulated_service_difference(
    records: Sequence[RequestRecord],
    tenants: Sequence[str],
    times: FloatArray,
    cost: CostFunction = DEFAULT_COST,
) -> FloatArray:
    """max - min over tenants of the service accumulated in [0, t], per t."""
    served = service_in_intervals(records, tenants, np.zeros_like(times), times, cost)
    result: FloatArray = served.max(axis=1) - served.min(axis=1)
    return result


def jains_index(values: Sequence[float] | FloatArray) -> float:
    """(sum x)^2 / (n sum x^2): 1 when all equal, 1/n when one takes everything."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0 or not np.any(x):
        return 1.0
    return float(x.sum() ** 2 / (x.size * np.square(x).sum()))


def backlogged_jains_index(
    records: Sequence[RequestRecord],
    tenants: Sequence[str],
    centers: FloatArray,
    weights: Mapping[str, float] | None = None,
    window_s: float = 60.0,
    cost: CostFunction = DEFAULT_COST,
) -> float:
    """Mean Jain's index of weight-normalised service rates over windows, taken
    among tenants backlogged (a request waiting for admission) at the window
    centre; windows with fewer than two backlogged tenants are skipped."""
    rates = service_rates(records, tenants, centers, window_s, cost)
    w = np.array([(weights or {}).get(t, 1.0) for t in tenants])
    scores = []
    for k, center in enumerate(centers):
        mask = _backlogged(records, tenants, float(center))
        if mask.sum() >= 2:
            scores.append(jains_index(rates[k][mask] / w[mask]))
    return float(np.mean(scores)) if scores else 1.0


def _backlogged(
    records: Sequence[RequestRecord], tenants: Sequence[str], t: float
) -> npt.NDArray[np.bool_]:
    waiting = {
        r.tenant
        for r in records
        if r.arrival_s <= t
        and (r.admitted_s is None or r.admitted_s > t)
        and r.status is not RequestStatus.REJECTED
    }
    return np.array([tenant in waiting for tenant in tenants])


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (linear interpolation); NaN for no values."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


def ttfts(records: Sequence[RequestRecord], tenant: str | None = None) -> list[float]:
    return [r.ttft_s for r in records if r.ttft_s is not None and tenant in (None, r.tenant)]


def latencies(records: Sequence[RequestRecord], tenant: str | None = None) -> list[float]:
    return [r.latency_s for r in records if r.latency_s is not None and tenant in (None, r.tenant)]


def throughput_tokens_per_s(records: Sequence[RequestRecord], makespan_s: float) -> float:
    """(prompt + output) tokens of finished requests per second of the whole run,
    as the paper's artifact computes it (total tokens / total time)."""
    done = [r for r in records if r.status is RequestStatus.FINISHED]
    tokens = sum(r.prompt_tokens + r.output_tokens for r in done)
    return tokens / makespan_s if makespan_s > 0 else 0.0


def num_rejected(records: Sequence[RequestRecord]) -> int:
    return sum(r.status is RequestStatus.REJECTED for r in records)
