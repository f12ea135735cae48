"""One experiment cell: a workload through a policy on a profile, summarised."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler_core import metrics
from scheduler_core.registry import make_policy
from scheduler_core.sim.engine import simulate
from scheduler_core.sim.profiles import EngineProfile
from scheduler_core.sim.records import SimResult
from scheduler_core.sim.workloads import Workload


@dataclass(frozen=True, slots=True)
class Summary:
    """The figures the reproduce table and its JSON report."""

    max_diff: float
    avg_diff: float
    throughput_tok_s: float
    rejected: int
    ttft_p50_s: float | None
    ttft_p99_s: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "max_diff": self.max_diff,
            "avg_diff": self.avg_diff,
            "throughput_tok_s": self.throughput_tok_s,
            "rejected": self.rejected,
            "ttft_p50_s": self.ttft_p50_s,
            "ttft_p99_s": self.ttft_p99_s,
        }


@dataclass(frozen=True, slots=True)
class Cell:
    workload: Workload
    policy: str
    result: SimResult
    summary: Summary


def run_cell(workload: Workload, policy: str, profile: EngineProfile) -> Cell:
    """Simulate `workload` under a fresh `policy` (workload weights applied)."""
    fair_policy = make_policy(policy, weights=workload.weights)
    result = simulate(workload.jobs, profile, fair_policy)
    return Cell(workload, policy, result, summarize(workload, result))


def summarize(workload: Workload, result: SimResult) -> Summary:
    records = result.records
    diff = metrics.service_difference(
        records, workload.tenants, workload.duration_s, weights=workload.weights
    )
    ttfts = metrics.ttfts(records)
    return Summary(
        max_diff=diff.max_diff,
        avg_diff=diff.avg_diff,
        throughput_tok_s=metrics.throughput_tokens_per_s(records, result.makespan_s),
        rejected=metrics.num_rejected(records),
        ttft_p50_s=_finite(metrics.percentile(ttfts, 50)),
        ttft_p99_s=_finite(metrics.percentile(ttfts, 99)),
    )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
