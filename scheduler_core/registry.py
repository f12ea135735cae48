"""Policies by name, so workers and the command line can pick one by string."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from scheduler_core.costs import CostFunction, make_cost
from scheduler_core.demand import DemandPredictor, MovingAverageDemand, OracleDemand
from scheduler_core.policies import (
    FCFSPolicy,
    JustitiaPolicy,
    LCFPolicy,
    PredictiveVTCPolicy,
    RPMPolicy,
    VTCPolicy,
)
from scheduler_core.policy import FairPolicy
from scheduler_core.predictors import MovingAveragePredictor, OraclePredictor

POLICY_NAMES = (
    "fcfs",
    "rpm",
    "lcf",
    "vtc",
    "vtc-predict",
    "vtc-oracle",
    "justitia",
    "justitia-ma",
    "justitia-oracle",
)
_RPM_SHORTHAND = re.compile(r"rpm(\d+)")


def _cost(opts: dict[str, Any]) -> CostFunction | None:
    cost = opts.pop("cost", None)
    return make_cost(cost) if isinstance(cost, str) else cost


def _fcfs(opts: dict[str, Any]) -> FairPolicy:
    return FCFSPolicy()


def _rpm(opts: dict[str, Any]) -> FairPolicy:
    if "limit" not in opts:
        raise ValueError("policy 'rpm' needs limit=N (requests per minute)")
    return RPMPolicy(int(opts.pop("limit")), window_s=float(opts.pop("window_s", 60.0)))


def _lcf(opts: dict[str, Any]) -> FairPolicy:
    return LCFPolicy(_cost(opts))


def _vtc(opts: dict[str, Any]) -> FairPolicy:
    return VTCPolicy(_cost(opts))


def _vtc_predict(opts: dict[str, Any]) -> FairPolicy:
    predictor = MovingAveragePredictor(
        window=int(opts.pop("window", 5)), default_tokens=opts.pop("default_tokens", None)
    )
    return PredictiveVTCPolicy(predictor, _cost(opts))


def _vtc_oracle(opts: dict[str, Any]) -> FairPolicy:
    predictor = OraclePredictor(float(opts.pop("noise", 0.0)), int(opts.pop("seed", 0)))
    return PredictiveVTCPolicy(predictor, _cost(opts), name="vtc-oracle")


def _justitia_with(predictor: DemandPredictor, name: str, opts: dict[str, Any]) -> FairPolicy:
    timeout = float(opts.pop("idle_timeout_s", 30.0))
    return JustitiaPolicy(predictor, name=name, idle_timeout_s=timeout)


def _justitia(opts: dict[str, Any]) -> FairPolicy:
    # torch is imported here, by the one policy that needs it.
    from scheduler_core.predict import load_mlp_predictor

    weights = opts.pop("weights_path", None)
    return _justitia_with(load_mlp_predictor(weights), "justitia", opts)


def _justitia_ma(opts: dict[str, Any]) -> FairPolicy:
    predictor = MovingAverageDemand(int(opts.pop("window", 20)))
    return _justitia_with(predictor, "justitia-ma", opts)


def _justitia_oracle(opts: dict[str, Any]) -> FairPolicy:
    return _justitia_with(OracleDemand(), "justitia-oracle", opts)


_FACTORIES: dict[str, Callable[[dict[str, Any]], FairPolicy]] = {
    "fcfs": _fcfs,
    "rpm": _rpm,
    "lcf": _lcf,
    "vtc": _vtc,
    "vtc-predict": _vtc_predict,
    "vtc-oracle": _vtc_oracle,
    "justitia": _justitia,
    "justitia-ma": _justitia_ma,
    "justitia-oracle": _justitia_oracle,
}


def is_policy_name(name: str) -> bool:
    return name in _FACTORIES or _RPM_SHORTHAND.fullmatch(name) is not None


def make_policy(
    name: str, *, weights: Mapping[str, float] | None = None, **opts: Any
) -> FairPolicy:
    """Build a policy by name.

    Names: `fcfs`; `rpm` with `limit=N` (or the shorthand `rpmN`), `window_s`;
    `lcf`, `vtc` with `cost` (`linear`, `profiled`, `memory` or a
    CostFunction); `vtc-predict` with `window`, `default_tokens`, `cost`;
    `vtc-oracle` with `noise`, `seed`, `cost`; `justitia` (learned demand
    predictor, `weights_path`), `justitia-ma` (per-type moving average,
    `window`), `justitia-oracle`, all with `idle_timeout_s`. `weights` sets
    tenant weights.
    Unknown names or options raise ValueError.
    """
    shorthand = _RPM_SHORTHAND.fullmatch(name)
    if shorthand is not None:
        name, opts = "rpm", {**opts, "limit": int(shorthand.group(1))}
    factory = _FACTORIES.get(name)
    if factory is None:
        choices = ", ".join((*POLICY_NAMES, "rpmN"))
        raise ValueError(f"unknown policy {name!r}; choose from {choices}")
    remaining = dict(opts)
    policy = factory(remaining)
    if remaining:
        raise ValueError(f"policy {name!r} does not take {', '.join(sorted(remaining))}")
    for tenant, weight in (weights or {}).items():
        policy.set_weight(tenant, weight)
    return policy
