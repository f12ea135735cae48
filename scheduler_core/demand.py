"""Demand predictors: an application's total memory-centric cost, guessed at arrival.

Justitia orders applications by the virtual time at which they would finish
under fair sharing, which needs their cost before they run. Predictors see
an `AppInfo` (what is known at arrival) and learn from finished applications
through `observe`. The learned one (a small torch MLP) lives in
`scheduler_core.predict`, imported only by whoever asks for it.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from scheduler_core.apps import AppInfo, AppType
from scheduler_core.costs import MemoryCost

_MEMORY = MemoryCost()


class DemandPredictor(Protocol):
    name: str

    def predict(self, info: AppInfo) -> float:
        """Predicted total cost of the application, in KV token-steps (> 0)."""
        ...

    def observe(self, info: AppInfo, cost: float) -> None:
        """Learn the true cost of a finished application."""
        ...


def fallback_cost(info: AppInfo) -> float:
    """A guess with no history: every ready call at a quarter of its max_tokens.

    Deliberately modest: an under-prediction is corrected as cost accrues,
    while an over-prediction only ever delays the application itself.
    """
    per_call_prompt = info.prompt_tokens / info.fan_out
    per_call_output = max(1.0, info.max_tokens / info.fan_out / 4)
    return max(1.0, info.fan_out * _MEMORY.total(round(per_call_prompt), round(per_call_output)))


class OracleDemand:
    """The true cost (experiments only: it reads `AppInfo.true_cost`)."""

    name = "oracle"

    def predict(self, info: AppInfo) -> float:
        if info.true_cost is None:
            return fallback_cost(info)
        return max(1.0, info.true_cost)

    def observe(self, info: AppInfo, cost: float) -> None:
        return None


class MovingAverageDemand:
    """The mean cost of the last `window` finished applications of the same type.

    The baseline the learned predictor must beat. Before any history of a
    type, `fallback_cost`.
    """

    name = "moving-average"

    def __init__(self, window: int = 20) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._recent: dict[AppType, deque[float]] = {}

    def predict(self, info: AppInfo) -> float:
        recent = self._recent.get(info.app_type)
        if not recent:
            return fallback_cost(info)
        return max(1.0, sum(recent) / len(recent))

    def observe(self, info: AppInfo, cost: float) -> None:
        self._recent.setdefault(info.app_type, deque(maxlen=self.window)).append(cost)
