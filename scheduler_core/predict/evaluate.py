"""Judging demand predictors on a stream of applications: held-out MAPE and speed.

Torch-free: any `DemandPredictor` can be judged, the baselines included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from time import perf_counter as _timer
from typing import Any

import numpy as np

from scheduler_core.apps import AppInfo, Application, AppType
from scheduler_core.demand import DemandPredictor
from scheduler_core.sim.app_workloads import APP_TYPES


def unknown_type(info: AppInfo) -> AppInfo:
    """What vLLM knows: neither the application's type nor its number of calls."""
    return replace(info, app_type=AppType.UNKNOWN, num_calls=None)


def declared(info: AppInfo) -> AppInfo:
    """The application as its client declared it."""
    return info


@dataclass(frozen=True, slots=True)
class Contender:
    """A predictor under test and the view of each application it is given."""

    name: str
    make: Callable[[], DemandPredictor]
    view: Callable[[AppInfo], AppInfo] = declared


def relative_errors(
    predictor: DemandPredictor,
    apps: Sequence[Application],
    view: Callable[[AppInfo], AppInfo] = declared,
) -> dict[str, list[float]]:
    """`|pred - true| / true` per application type, walking `apps` in arrival order.

    Each application is predicted at arrival, then its true cost observed.
    """
    errors: dict[str, list[float]] = {app_type.value: [] for app_type in APP_TYPES}
    for app in apps:
        info = view(app.info(with_truth=True))  # only the oracle reads the truth
        predicted = predictor.predict(info)
        errors[app.app_type.value].append(abs(predicted - app.true_cost) / app.true_cost)
        predictor.observe(info, app.true_cost)
    return errors


def mape(errors: dict[str, list[float]]) -> dict[str, float]:
    """Mean relative error per type and `overall`, rounded to 4 places."""
    everything = [error for values in errors.values() for error in values]
    table = {name: float(np.mean(values)) for name, values in errors.items() if values}
    table["overall"] = float(np.mean(everything))
    return {name: round(value, 4) for name, value in table.items()}


def inference_us(predictor: DemandPredictor, apps: Sequence[Application]) -> float:
    """Mean microseconds per `predict` call over `apps`, history included.

    The clock measures the predictor's own speed for the report; it never
    enters a scheduling decision.
    """
    total = 0.0
    for app in apps:
        info = app.info(with_truth=False)
        start = _timer()
        predictor.predict(info)
        total += _timer() - start
        predictor.observe(info, app.true_cost)
    return round(total / len(apps) * 1e6, 1)


# -- the report ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrainReport:
    """Held-out MAPE by contender (overall and per type) and the MLP's costs."""

    mape: dict[str, dict[str, float]]
    inference_us: float
    train_seconds: float
    num_train: int
    num_test: int
    weights_bytes: int

    def as_dict(self) -> dict[str, Any]:
        rows = [*(app_type.value for app_type in APP_TYPES), "overall"]
        return {
            "mape": {name: table["overall"] for name, table in self.mape.items()},
            "per_type": {
                row: {name: table[row] for name, table in self.mape.items() if row in table}
                for row in rows
            },
            "inference_us": self.inference_us,
            "train_seconds": self.train_seconds,
            "num_train": self.num_train,
            "num_test": self.num_test,
            "weights_bytes": self.weights_bytes,
        }

    def markdown(self) -> str:
        per_type: dict[str, dict[str, float]] = self.as_dict()["per_type"]
        names = list(self.mape)
        lines = [
            "| held-out MAPE | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for row, by_name in per_type.items():
            cells = " | ".join(_percent(by_name.get(name)) for name in names)
            lines.append(f"| {row} | {cells} |")
        lines.append(
            f"\n{self.num_train} training / {self.num_test} held-out applications; "
            f"trained in {self.train_seconds:.1f} s; {self.inference_us:.0f} µs per prediction; "
            f"weights {self.weights_bytes / 1024:.1f} KiB"
        )
        return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
