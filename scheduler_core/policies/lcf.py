"""Least counter first: VTC's counters without the lift (the paper's LCF baseline)."""

from __future__ import annotations

from scheduler_core.costs import CostFunction
from scheduler_core.policies.vtc import VTCPolicy


class LCFPolicy(VTCPolicy):
    """Serves the smallest counter; a tenant returning from idle keeps its
    old, low counter and so can starve others until it catches up."""

    name = "lcf"

    def __init__(self, cost: CostFunction | None = None) -> None:
        super().__init__(cost, lift=False)
