"""The demand predictor's inputs: what an `AppInfo` and the tenant's recent history say.

Numpy only, so features can be built (and tested) without torch. Costs enter
as logs: they span five orders of magnitude, and a tenant's style (verbosity,
agent steps) multiplies them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from scheduler_core.apps import AppInfo, Application, AppType

HISTORY_WINDOW = 16
_Key = TypeVar("_Key", str, tuple[str, AppType])

FEATURE_NAMES: tuple[str, ...] = (
    *(f"type_{app_type.value}" for app_type in AppType),
    "log_prompt_tokens",
    "log_fan_out",
    "log_max_tokens",
    "log_num_calls",
    "num_calls_known",
    *(
        f"{scope}_history_{name}"
        for scope in ("type", "tenant")
        for name in ("log_cost", "log_cost_per_prompt", "count")
    ),
)


@dataclass(slots=True)
class _Recent:
    """The last few costs of one tenant (or one tenant's type), as logs.

    `log_cost_per_prompt` is `log(cost / prompt_tokens)`: close to the log of
    the output length per call for every kind of application, so it measures
    a tenant's verbosity apart from how long its prompts happened to be.
    """

    log_costs: deque[float]
    log_costs_per_prompt: deque[float]

    def add(self, info: AppInfo, cost: float) -> None:
        log_cost = math.log1p(max(cost, 0.0))
        self.log_costs.append(log_cost)
        self.log_costs_per_prompt.append(log_cost - math.log1p(info.prompt_tokens))

    def features(self, window: int) -> tuple[float, float, float]:
        return (
            _mean(self.log_costs),
            _mean(self.log_costs_per_prompt),
            len(self.log_costs) / window,
        )


_NO_HISTORY = (0.0, 0.0, 0.0)


class HistoryFeatures:
    """Each tenant's last `window` costs, overall and per application type.

    The type history of an UNKNOWN application is the tenant's history over
    all types: inside vLLM every application is UNKNOWN, so the two coincide
    there, and training with masked types teaches the model exactly that case.
    """

    def __init__(self, window: int = HISTORY_WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._by_tenant: dict[str, _Recent] = {}
        self._by_tenant_type: dict[tuple[str, AppType], _Recent] = {}

    def features(self, info: AppInfo) -> np.ndarray:
        """The feature vector of `info` at arrival, in `FEATURE_NAMES` order (float32)."""
        values = [
            *(1.0 if info.app_type is app_type else 0.0 for app_type in AppType),
            math.log1p(info.prompt_tokens),
            math.log1p(info.fan_out),
            math.log1p(info.max_tokens),
            0.0 if info.num_calls is None else math.log1p(info.num_calls),
            0.0 if info.num_calls is None else 1.0,
            *self._history_features(self._type_history(info)),
            *self._history_features(self._by_tenant.get(info.tenant)),
        ]
        return np.array(values, dtype=np.float32)

    def observe(self, info: AppInfo, cost: float) -> None:
        """Remember the true cost of one of `info.tenant`'s finished applications."""
        self._recent(self._by_tenant, info.tenant).add(info, cost)
        self._recent(self._by_tenant_type, (info.tenant, info.app_type)).add(info, cost)

    def _type_history(self, info: AppInfo) -> _Recent | None:
        if info.app_type is AppType.UNKNOWN:
            return self._by_tenant.get(info.tenant)
        return self._by_tenant_type.get((info.tenant, info.app_type))

    def _history_features(self, recent: _Recent | None) -> tuple[float, float, float]:
        return _NO_HISTORY if recent is None else recent.features(self.window)

    def _recent(self, memory: dict[_Key, _Recent], key: _Key) -> _Recent:
        if key not in memory:
            memory[key] = _Recent(deque(maxlen=self.window), deque(maxlen=self.window))
        return memory[key]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@dataclass(frozen=True, slots=True)
class Masking:
    """How often training hides what a client may not declare.

    `unknown_rate`: the vLLM view, neither the type nor the number of calls
    known. `no_calls_rate`: the type declared but not the number of calls.
    """

    unknown_rate: float = 0.1
    no_calls_rate: float = 0.2

    def __post_init__(self) -> None:
        for rate in (self.unknown_rate, self.no_calls_rate):
            if not 0 <= rate <= 1:
                raise ValueError(f"masking rates must be in [0, 1], got {rate}")

    def apply(self, info: AppInfo, rng: np.random.Generator) -> AppInfo:
        draw = float(rng.random())
        if draw < self.unknown_rate:
            return replace(info, app_type=AppType.UNKNOWN, num_calls=None)
        if draw < self.unknown_rate + self.no_calls_rate:
            return replace(info, num_calls=None)
        return info


NO_MASKING = Masking(unknown_rate=0.0, no_calls_rate=0.0)


def training_matrix(
    apps: Iterable[Application], *, masking: Masking = NO_MASKING, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`(X, y = log(true cost))` from a stream of applications in arrival order.

    Each application's features are taken at its arrival, then its true cost
    is observed at once. A real scheduler learns a cost only when the
    application finishes, a few seconds later; immediate observation is a
    simplification that only shifts the history by a few applications.
    """
    history = HistoryFeatures()
    rng = np.random.default_rng(seed)
    rows, targets = [], []
    for app in apps:
        info = app.info(with_truth=False)
        rows.append(history.features(masking.apply(info, rng)))
        targets.append(math.log(max(app.true_cost, 1.0)))
        history.observe(info, app.true_cost)
    if not rows:
        raise ValueError("training_matrix needs at least one application")
    return np.stack(rows), np.array(targets, dtype=np.float32)
