"""The admin's what-if replay: recorded traffic through the simulator under current and
proposed weights, so an operator sees a weight change's effect before applying it.

A request's arrival is `finished_at - latency_ms`; the window [start, end) selects requests
by *arrival* (what the engine was asked to do in the window, not what it happened to finish),
and arrival times are re-based to 0 at the window start. The replay never reads the clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
import numpy.typing as npt
from django.db.models import DurationField, ExpressionWrapper, F, Value
from django.db.models.expressions import CombinedExpression

from scheduler_core import metrics
from scheduler_core.job import Job
from scheduler_core.policy import FairPolicy
from scheduler_core.registry import make_policy
from scheduler_core.sim import EngineProfile, RequestRecord, RequestStatus, simulate
from scheduler_core.sim.profiles import get_profile
from tenants.models import MAX_WEIGHT, Tenant
from usage.models import UsageRecord

# Two simulations run inside one HTTP request. At this size each takes from about one second
# (sparse traffic) to six (a saturated engine) on one core; 20,000 took up to 30 s each.
MAX_REPLAY_REQUESTS = 5_000
# Service as VTC counts it by default: input + 2 x output tokens.
_COST = metrics.DEFAULT_COST
MAX_WINDOW = timedelta(days=7)
_ONE_MS = timedelta(milliseconds=1)
DEFAULT_POLICY = "vtc"
DEFAULT_PROFILE = "h100-llama3-8b"
FloatArray = npt.NDArray[np.float64]


class WhatIfError(ValueError):
    """Bad input for a replay; `field` names the request field to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One recorded request, as the replay needs it (arrival in seconds from window start)."""

    request_id: str
    tenant: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int

    def as_job(self) -> Job:
        # The recorded output length is forced (max_tokens = output), as in trace replay.
        # A request aborted before its first token still cost a prefill: it replays as one token.
        output = max(1, self.output_tokens)
        return Job(self.request_id, self.tenant, self.arrival_s, self.prompt_tokens, output, output)


@dataclass(frozen=True, slots=True)
class TenantOutcome:
    """One tenant's predicted figures; percentiles are None when none of its requests ran."""

    tenant: str
    weight: float
    weight_share: float
    served_share: float
    served_tokens: int
    num_requests: int
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None


@dataclass(frozen=True, slots=True)
class Scenario:
    weights: dict[str, float]
    throughput_tokens_per_s: float
    makespan_s: float
    tenants: list[TenantOutcome]


@dataclass(frozen=True, slots=True)
class WhatIfResult:
    policy: str
    profile: str
    start: datetime
    end: datetime
    num_requests: int
    current: Scenario
    proposed: Scenario


# -- loading the recorded traffic -------------------------------------------------------


def load_recorded(
    start: datetime, end: datetime, tenants: Sequence[str] | None = None
) -> list[RecordedRequest]:
    """Requests that *arrived* in [start, end), in arrival order (ties by row id).

    Rows with no prompt tokens never reached an engine and are left out. More than
    MAX_REPLAY_REQUESTS raises WhatIfError on `start_time`.
    """
    _check_window(start, end)
    rows = _rows(start, end, tenants)
    if len(rows) > MAX_REPLAY_REQUESTS:
        raise WhatIfError(
            "start_time",
            f"More than {MAX_REPLAY_REQUESTS:,} requests arrived in this range; "
            "narrow the range (or the tenants) and try again.",
        )
    return [
        RecordedRequest(request_id, slug, (arrival - start).total_seconds(), prompt, output)
        for request_id, slug, arrival, prompt, output in rows
    ]


def _check_window(start: datetime, end: datetime) -> None:
    if end <= start:
        raise WhatIfError("end_time", "end_time must be after start_time.")
    if end - start > MAX_WINDOW:
        raise WhatIfError("end_time", "The range may span at most 7 days.")


def _rows(
    start: datetime, end: datetime, tenants: Sequence[str] | None
) -> list[tuple[str, str, datetime, int, int]]:
    # finished_at >= arrival >= start: the first filter lets the finished_at index narrow the scan.
    records = UsageRecord.objects.filter(finished_at__gte=start, prompt_tokens__gte=1)
    if tenants is not None:
        records = records.filter(tenant__slug__in=tenants)
    rows = (
        records.annotate(arrival=F("finished_at") - _latency())
        .filter(arrival__gte=start, arrival__lt=end)
        .order_by("arrival", "id")
        .values_list("request_id", "tenant__slug", "arrival", "prompt_tokens", "output_tokens")
    )
    return list(rows[: MAX_REPLAY_REQUESTS + 1])


def _latency() -> ExpressionWrapper[CombinedExpression]:
    return ExpressionWrapper(F("latency_ms") * Value(_ONE_MS), output_field=DurationField())


# -- one replay ------------------------------------------------------------------------------


def replay(
    recorded: Sequence[RecordedRequest],
    weights: Mapping[str, float],
    policy: str = DEFAULT_POLICY,
    profile: str = DEFAULT_PROFILE,
) -> Scenario:
    """Simulate `recorded` under `weights` (absent tenants weigh 1) and summarise per tenant.

    `served_share` is a tenant's share of the service delivered *while at least two tenants
    were backlogged* (had a request waiting for admission), when the policy's choices decide
    who is served; with no such moment, its share over the whole replay. Service is counted
    as VTC counts it by default (input + 2 x output tokens, `_COST`), spread
    evenly over each request's [first token, finish] as `scheduler_core.metrics` does.
    `served_tokens` is plain input + output tokens of the tenant's finished requests.
    """
    engine = _profile(profile)
    slugs = sorted({request.tenant for request in recorded})
    scenario_weights = {slug: float(weights.get(slug, 1.0)) for slug in slugs}
    fair_policy = _policy(policy, scenario_weights)
    try:
        result = simulate([request.as_job() for request in recorded], engine, fair_policy)
    except ValueError as error:  # a recorded request larger than this profile's KV pool
        raise WhatIfError("profile", f"{error}; pick a profile with a larger KV cache.") from error
    records = result.records
    shares = _served_shares(records, slugs)
    total_weight = sum(scenario_weights.values())
    outcomes = [
        _outcome(records, slug, scenario_weights[slug], total_weight, share)
        for slug, share in zip(slugs, shares, strict=True)
    ]
    return Scenario(
        weights=scenario_weights,
        throughput_tokens_per_s=metrics.throughput_tokens_per_s(records, result.makespan_s),
        makespan_s=result.makespan_s,
        tenants=outcomes,
    )


def _profile(name: str) -> EngineProfile:
    try:
        return get_profile(name)
    except ValueError as error:
        raise WhatIfError("profile", str(error)) from error


def _policy(name: str, weights: Mapping[str, float]) -> FairPolicy:
    try:
        return make_policy(name, weights=weights)
    except (ValueError, ImportError, OSError) as error:  # unknown name, or rpm without limit
        raise WhatIfError("policy", str(error)) from error


def _outcome(
    records: Sequence[RequestRecord], slug: str, weight: float, total_weight: float, share: float
) -> TenantOutcome:
    mine = [record for record in records if record.tenant == slug]
    done = [record for record in mine if record.status is RequestStatus.FINISHED]
    ttfts, latencies = metrics.ttfts(mine), metrics.latencies(mine)
    return TenantOutcome(
        tenant=slug,
        weight=weight,
        weight_share=weight / total_weight,
        served_share=share,
        served_tokens=sum(record.prompt_tokens + record.output_tokens for record in done),
        num_requests=len(mine),
        ttft_p50_ms=_ms(metrics.percentile(ttfts, 50)),
        ttft_p95_ms=_ms(metrics.percentile(ttfts, 95)),
        latency_p50_ms=_ms(metrics.percentile(latencies, 50)),
        latency_p95_ms=_ms(metrics.percentile(latencies, 95)),
    )


def _ms(seconds: float) -> float | None:
    return seconds * 1000 if math.isfinite(seconds) else None


# -- service while backlogged ----------------------------------------------------------------


def _served_shares(records: Sequence[RequestRecord], slugs: Sequence[str]) -> list[float]:
    """Each tenant's share of the service in contended time, else overall (see `replay`)."""
    served = [r for r in records if r.first_token_s is not None and r.finish_s is not None]
    begin = np.array([r.first_token_s for r in served], dtype=np.float64)
    finish = np.array([r.finish_s for r in served], dtype=np.float64)
    value = np.array([_COST.total(r.prompt_tokens, r.output_tokens) for r in served])
    tenant_of = np.array([slugs.index(r.tenant) for r in served], dtype=np.int64)
    contended = _contended_fraction(begin, finish, *_contended_intervals(records))
    per_tenant = np.bincount(tenant_of, weights=contended * value, minlength=len(slugs))
    if not per_tenant.sum() > 0:
        per_tenant = np.bincount(tenant_of, weights=value, minlength=len(slugs))
    total = float(per_tenant.sum())
    return [float(x) / total if total > 0 else 0.0 for x in per_tenant]


def _contended_intervals(records: Iterable[RequestRecord]) -> tuple[FloatArray, FloatArray]:
    """Sorted, disjoint [start, end) intervals in which two or more tenants had a request
    waiting. A request waits from arrival to its first admission (waiting again after a
    preemption is not counted: the records do not say when it happened)."""
    events = []  # (time, -1 admitted / +1 arrived, tenant): at equal times admissions go first
    for r in records:
        if r.admitted_s is not None and r.admitted_s > r.arrival_s:
            events += [(r.arrival_s, 1, r.tenant), (r.admitted_s, -1, r.tenant)]
    waiting: dict[str, int] = {}
    starts: list[float] = []
    ends: list[float] = []
    for time, delta, tenant in sorted(events):
        was_contended = len(waiting) >= 2
        waiting[tenant] = waiting.get(tenant, 0) + delta
        if waiting[tenant] == 0:
            del waiting[tenant]
        if len(waiting) >= 2 and not was_contended:
            starts.append(time)
        elif len(waiting) < 2 and was_contended:
            ends.append(time)
    return np.array(starts, dtype=np.float64), np.array(ends, dtype=np.float64)


def _contended_fraction(
    begin: FloatArray, finish: FloatArray, starts: FloatArray, ends: FloatArray
) -> FloatArray:
    """The fraction of each [begin, finish] that is contended (for a point: 0 or 1)."""
    if starts.size == 0:
        return np.zeros_like(begin)
    span = finish - begin
    inside = _contended_before(finish, starts, ends) - _contended_before(begin, starts, ends)
    k = np.searchsorted(starts, finish, side="right") - 1
    at_point = (k >= 0) & (finish < ends[np.maximum(k, 0)])
    result: FloatArray = np.where(span > 0, inside / np.where(span > 0, span, 1.0), at_point)
    return result


def _contended_before(times: FloatArray, starts: FloatArray, ends: FloatArray) -> FloatArray:
    """Length of contended time in [0, t], for each t."""
    lengths = ends - starts
    before = np.concatenate(([0.0], np.cumsum(lengths)))  # before[k]: intervals 0..k-1
    k = np.searchsorted(starts, times, side="right")  # how many intervals start by t
    last = np.maximum(k - 1, 0)
    partial = np.where(k > 0, np.clip(times - starts[last], 0.0, lengths[last]), 0.0)
    result: FloatArray = before[last] + partial
    return result


# -- the comparison ---------------------------------------------------------------------------


def what_if(
    start: datetime,
    end: datetime,
    tenants: Sequence[str] | None,
    proposed_weights: Mapping[str, float | Decimal],
    policy: str = DEFAULT_POLICY,
    profile: str = DEFAULT_PROFILE,
) -> WhatIfResult:
    """Replay the requests that arrived in [start, end) (of `tenants`, default all) twice:
    under the tenants' current weights, and with `proposed_weights` replacing some of them.
    Bad input raises WhatIfError naming the field."""
    _profile(profile)
    _policy(policy, {})  # fail on a bad name before reading any usage
    proposed = _checked_weights(proposed_weights)
    _check_known("tenants", tenants or ())
    recorded = load_recorded(start, end, tenants)
    if not recorded:
        raise WhatIfError(
            "start_time", "No recorded requests in this range; pick a range with traffic."
        )
    current = current_weights({request.tenant for request in recorded})
    return WhatIfResult(
        policy=policy,
        profile=profile,
        start=start,
        end=end,
        num_requests=len(recorded),
        current=replay(recorded, current, policy, profile),
        proposed=replay(recorded, {**current, **proposed}, policy, profile),
    )


def current_weights(slugs: Iterable[str]) -> dict[str, float]:
    rows = Tenant.objects.filter(slug__in=list(slugs)).values_list("slug", "weight")
    return {slug: float(weight) for slug, weight in rows}


def _checked_weights(weights: Mapping[str, float | Decimal]) -> dict[str, float]:
    checked = {}
    for slug, raw in weights.items():
        value = Decimal(str(raw))
        if not (value.is_finite() and 0 < value <= MAX_WEIGHT):
            raise WhatIfError(
                "weights", f"Weight of {slug!r} must be > 0 and at most {MAX_WEIGHT}."
            )
        checked[slug] = float(value)
    _check_known("weights", checked)
    return checked


def _check_known(field: str, slugs: Iterable[str]) -> None:
    wanted = set(slugs)
    unknown = wanted - set(Tenant.objects.filter(slug__in=wanted).values_list("slug", flat=True))
    if unknown:
        raise WhatIfError(field, f"Unknown tenant(s): {', '.join(sorted(unknown))}.")
