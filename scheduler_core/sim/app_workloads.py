"""Application workloads: map-reduce, self-consistency, agents and chat, per tenant.

Lengths are seeded lognormals whose medians follow the shape of each kind of
application (the Justitia paper's suite: long documents split into chunks,
K samples of one reasoning prompt, tool-using agents whose context grows).
Tenants differ in style: a verbosity factor on every output and, for agents,
how many steps they usually take. That is what a demand predictor can learn
from a tenant's history; nothing else about a tenant is visible at arrival.
Arrivals are Poisson per tenant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from scheduler_core.apps import Application, AppType, CallSpec
from scheduler_core.job import Job

MAX_OUTPUT = 1024
CHUNK_TOKENS = 1500
INSTRUCTION_TOKENS = 100


@dataclass(frozen=True, slots=True)
class TenantStyle:
    """How one tenant's applications tend to look."""

    verbosity: float = 1.0
    agent_steps: float = 4.0


@dataclass(frozen=True, slots=True)
class TenantLoad:
    """A tenant's Poisson stream: applications per second and the mix of kinds."""

    rate: float
    mix: Mapping[AppType, float]
    style: TenantStyle = TenantStyle()
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class AppWorkload:
    name: str
    apps: tuple[Application, ...]
    duration_s: float
    weights: dict[str, float] = field(default_factory=dict)

    @property
    def tenants(self) -> list[str]:
        return sorted({app.tenant for app in self.apps})

    @property
    def jobs(self) -> list[Job]:
        """Every call as a request arriving with its application (to check sizes up front)."""
        return [job for app in self.apps for job in app.jobs()]


def _lognormal(rng: np.random.Generator, median: float, sigma: float, lo: int, hi: int) -> int:
    return int(np.clip(round(median * math.exp(sigma * rng.standard_normal())), lo, hi))


# -- one application of each kind ---------------------------------------------------------


def _chat(rng: np.random.Generator, style: TenantStyle) -> tuple[CallSpec, ...]:
    prompt = _lognormal(rng, 400, 0.6, 16, 4000)
    output = _lognormal(rng, 180 * style.verbosity, 0.5, 8, MAX_OUTPUT)
    return (CallSpec(0, prompt, output, MAX_OUTPUT),)


def _self_consistency(rng: np.random.Generator, style: TenantStyle) -> tuple[CallSpec, ...]:
    samples = int(rng.integers(3, 11))
    prompt = _lognormal(rng, 600, 0.4, 32, 4000)
    median = 250 * style.verbosity
    return tuple(
        CallSpec(i, prompt, _lognormal(rng, median, 0.3, 16, MAX_OUTPUT), MAX_OUTPUT)
        for i in range(samples)
    )


def _map_reduce(rng: np.random.Generator, style: TenantStyle) -> tuple[CallSpec, ...]:
    document = _lognormal(rng, 6000, 0.6, 1000, 30000)
    num_chunks = math.ceil(document / CHUNK_TOKENS)
    calls = []
    for i in range(num_chunks):
        chunk = min(CHUNK_TOKENS, document - i * CHUNK_TOKENS)
        output = _lognormal(rng, 150 * style.verbosity, 0.3, 16, MAX_OUTPUT)
        calls.append(CallSpec(i, chunk + INSTRUCTION_TOKENS, output, MAX_OUTPUT))
    summaries = sum(call.output_tokens for call in calls)
    output = _lognormal(rng, 300 * style.verbosity, 0.3, 16, MAX_OUTPUT)
    reduce = CallSpec(
        num_chunks,
        summaries + INSTRUCTION_TOKENS,
        output,
        MAX_OUTPUT,
        parents=tuple(range(num_chunks)),
        delay_s=float(rng.exponential(0.05)),
    )
    return (*calls, reduce)


def _agent(rng: np.random.Generator, style: TenantStyle) -> tuple[CallSpec, ...]:
    steps = int(np.clip(rng.poisson(style.agent_steps - 1) + 1, 1, 12))
    context = _lognormal(rng, 800, 0.5, 64, 4000)
    calls: list[CallSpec] = []
    for i in range(steps):
        output = _lognormal(rng, 120 * style.verbosity, 0.5, 8, 512)
        parents = (i - 1,) if i else ()
        delay = float(rng.exponential(1.0)) if i else 0.0  # the tool runs between steps
        calls.append(CallSpec(i, context, output, MAX_OUTPUT, parents, delay))
        context += output + _lognormal(rng, 200, 0.7, 8, 2000)
    return tuple(calls)


_SHAPES: dict[AppType, Callable[[np.random.Generator, TenantStyle], tuple[CallSpec, ...]]] = {
    AppType.CHAT: _chat,
    AppType.SELF_CONSISTENCY: _self_consistency,
    AppType.MAP_REDUCE: _map_reduce,
    AppType.AGENT: _agent,
}
APP_TYPES: tuple[AppType, ...] = tuple(_SHAPES)


def sample_application(
    rng: np.random.Generator,
    app_type: AppType,
    *,
    app_id: str,
    tenant: str,
    arrival_s: float,
    style: TenantStyle = TenantStyle(),
) -> Application:
    """One application of `app_type`, its lengths drawn from `rng`."""
    if app_type not in _SHAPES:
        raise ValueError(f"cannot generate applications of type {app_type.value!r}")
    return Application(app_id, tenant, arrival_s, app_type, _SHAPES[app_type](rng, style))


def poisson_apps(
    rng: np.random.Generator, tenants: Mapping[str, TenantLoad], duration_s: float, prefix: str
) -> list[Application]:
    """Every tenant's Poisson stream over `duration_s`, merged in arrival order."""
    apps = []
    for tenant, load in tenants.items():
        kinds = list(load.mix)
        odds = np.array([load.mix[kind] for kind in kinds], dtype=np.float64)
        t = float(rng.exponential(1 / load.rate))
        while t < duration_s:
            kind = kinds[int(rng.choice(len(kinds), p=odds / odds.sum()))]
            apps.append((t, tenant, kind))
            t += float(rng.exponential(1 / load.rate))
    apps.sort(key=lambda item: (item[0], item[1]))
    return [
        sample_application(
            rng,
            kind,
            app_id=f"{prefix}-{i}",
            tenant=tenant,
            arrival_s=t,
            style=tenants[tenant].style,
        )
        for i, (t, tenant, kind) in enumerate(apps)
    ]


# -- named workloads ---------------------------------------------------------------------

_ONLY = {kind: {kind: 1.0} for kind in APP_TYPES}
_EVEN_MIX = {kind: 1.0 for kind in APP_TYPES}

# Four tenants with distinct styles: the `mixed` workload's cast. Rates put the
# default engine (a100-llama2-13b, ~51k KV tokens) well over capacity
# while they arrive, so queues build and the order of service decides
# completion times.
_STYLES = (
    TenantStyle(verbosity=1.0, agent_steps=3.0),
    TenantStyle(verbosity=1.6, agent_steps=6.0),
    TenantStyle(verbosity=0.7, agent_steps=2.0),
    TenantStyle(verbosity=1.2, agent_steps=8.0),
)
_MIXES: tuple[Mapping[AppType, float], ...] = (
    _EVEN_MIX,
    {AppType.MAP_REDUCE: 2.0, AppType.CHAT: 1.0},
    {AppType.CHAT: 3.0, AppType.SELF_CONSISTENCY: 1.0},
    {AppType.AGENT: 1.0, AppType.SELF_CONSISTENCY: 2.0},
)
_MIXED_WEIGHTS = (1.0, 1.0, 2.0, 1.0)
_DURATION_S = 600.0


def _tenants(mixes: Sequence[Mapping[AppType, float]], rate: float) -> dict[str, TenantLoad]:
    return {
        f"tenant{i}": TenantLoad(rate, mix, _STYLES[i], _MIXED_WEIGHTS[i])
        for i, mix in enumerate(mixes)
    }


_LOADS: dict[str, dict[str, TenantLoad]] = {
    "mixed": _tenants(_MIXES, 0.2),
    "chat": _tenants([_ONLY[AppType.CHAT]] * 4, 0.9),
    "self_consistency": _tenants([_ONLY[AppType.SELF_CONSISTENCY]] * 4, 0.12),
    "map_reduce": _tenants([_ONLY[AppType.MAP_REDUCE]] * 4, 0.1),
    "agent": _tenants([_ONLY[AppType.AGENT]] * 4, 0.1),
}
APP_WORKLOAD_NAMES: tuple[str, ...] = tuple(_LOADS)


def make_app_workload(name: str, seed: int = 0, *, rate_scale: float = 1.0) -> AppWorkload:
    """An application workload by name; ValueError otherwise."""
    if name not in _LOADS:
        raise ValueError(
            f"unknown application workload {name!r}; choose from {', '.join(APP_WORKLOAD_NAMES)}"
        )
    if not rate_scale > 0:
        raise ValueError(f"rate_scale must be > 0, got {rate_scale}")
    loads = {
        tenant: TenantLoad(load.rate * rate_scale, load.mix, load.style, load.weight)
        for tenant, load in _LOADS[name].items()
    }
    apps = poisson_apps(np.random.default_rng(seed), loads, _DURATION_S, name)
    weights = {tenant: load.weight for tenant, load in loads.items()}
    return AppWorkload(name, tuple(apps), _DURATION_S, weights)


def training_apps(seed: int, num_apps: int) -> list[Application]:
    """A stream of `num_apps` applications of every kind from many tenant styles,
    in arrival order: the demand predictor's training and test data."""
    rng = np.random.default_rng(seed)
    styles = [
        TenantStyle(float(np.exp(rng.normal(0, 0.35))), float(rng.uniform(2, 8))) for _ in range(24)
    ]
    apps = []
    t = 0.0
    for i in range(num_apps):
        t += float(rng.exponential(0.5))
        tenant = int(rng.integers(len(styles)))
        kind = APP_TYPES[int(rng.integers(len(APP_TYPES)))]
        apps.append(
            sample_application(
                rng,
                kind,
                app_id=f"train-{i}",
                tenant=f"t{tenant}",
                arrival_s=t,
                style=styles[tenant],
            )
        )
    return apps
