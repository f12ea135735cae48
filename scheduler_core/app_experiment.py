"""One application experiment cell: an application workload through a policy, summarised.

Solo times (each application alone on an idle engine) depend on the
workload and the profile only, so `solo_times` is computed once per
workload and shared by every policy's cell.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scheduler_core import metrics
from scheduler_core.app_metrics import AppOutcome, outcomes
from scheduler_core.apps import Application
from scheduler_core.costs import MemoryCost
from scheduler_core.policies.fcfs import FCFSPolicy
from scheduler_core.registry import make_policy
from scheduler_core.sim.app_workloads import AppWorkload
from scheduler_core.sim.engine import simulate
from scheduler_core.sim.profiles import EngineProfile
from scheduler_core.sim.records import RequestRecord, SimResult


@dataclass(frozen=True, slots=True)
class AppSummary:
    """The figures `reproduce justitia` reports per workload and policy."""

    mean_completion_s: float
    p50_completion_s: float
    p99_completion_s: float
    max_slowdown: float
    jain: float
    throughput_tok_s: float
    max_lateness_s: float
    bound_violations: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "mean_completion_s": self.mean_completion_s,
            "p50_completion_s": self.p50_completion_s,
            "p99_completion_s": self.p99_completion_s,
            "max_slowdown": self.max_slowdown,
            "jain": self.jain,
            "throughput_tok_s": self.throughput_tok_s,
            "max_lateness_s": self.max_lateness_s,
            "bound_violations": self.bound_violations,
        }


@dataclass(frozen=True, slots=True)
class AppCell:
    workload: AppWorkload
    policy: str
    result: SimResult
    outcomes: tuple[AppOutcome, ...]
    summary: AppSummary


def solo_times(apps: Sequence[Application], profile: EngineProfile) -> dict[str, float]:
    """How long each application takes alone on an idle engine."""
    return {
        app.app_id: simulate([], profile, FCFSPolicy(), apps=[app]).makespan_s - app.arrival_s
        for app in apps
    }


def longest_hold_s(records: Sequence[RequestRecord]) -> float:
    """The longest any call held KV memory (admission to finish) in the run."""
    holds = [
        r.finish_s - r.admitted_s
        for r in records
        if r.finish_s is not None and r.admitted_s is not None
    ]
    return max(holds, default=0.0)


def delay_bounds(apps: Sequence[Application], records: Sequence[RequestRecord]) -> dict[str, float]:
    """Justitia's bound on each application's lateness past its ideal fair-sharing
    finish: one longest hold per call on its dependency chain (README, "Justitia's
    delay bound")."""
    hold = longest_hold_s(records)
    return {app.app_id: app.depth * hold for app in apps}


def run_app_cell(
    workload: AppWorkload,
    policy: str,
    profile: EngineProfile,
    solo_s: Mapping[str, float],
) -> AppCell:
    """Simulate `workload` under a fresh `policy` (workload weights applied)."""
    fair_policy = make_policy(policy, weights=workload.weights)
    result = simulate([], profile, fair_policy, apps=workload.apps)
    done = tuple(outcomes(workload.apps, result.records, workload.weights, solo_s))
    summary = summarize_apps(workload, result, done)
    return AppCell(workload, policy, result, done, summary)


def summarize_apps(
    workload: AppWorkload, result: SimResult, done: Sequence[AppOutcome]
) -> AppSummary:
    completions = [outcome.completion_s for outcome in done]
    bounds = delay_bounds(workload.apps, result.records)
    lateness = [outcome.finish_s - outcome.ideal_finish_s for outcome in done]
    violations = sum(
        late > bounds[outcome.app_id] + 1e-6 for late, outcome in zip(lateness, done, strict=True)
    )
    centers = metrics.paper_window_centers(workload.duration_s)
    jain = metrics.backlogged_jains_index(
        result.records, workload.tenants, centers, workload.weights, cost=MemoryCost()
    )
    return AppSummary(
        mean_completion_s=float(np.mean(completions)) if completions else math.nan,
        p50_completion_s=metrics.percentile(completions, 50),
        p99_completion_s=metrics.percentile(completions, 99),
        max_slowdown=max((outcome.slowdown for outcome in done), default=math.nan),
        jain=jain,
        throughput_tok_s=metrics.throughput_tokens_per_s(result.records, result.makespan_s),
        max_lateness_s=max(lateness, default=0.0),
        bound_violations=int(violations),
    )
