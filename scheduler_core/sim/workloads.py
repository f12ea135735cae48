"""The VTC paper's workloads (§5.2-5.4) and trace replay, by name.

Parameters follow the paper's artifact (Ying1123/VTC-artifact,
fair_bench/exp_suite.py and trace.py), re-implemented here: "uniform"
clients send at a fixed interval 1/rate with a random phase; on/off clients
are silent in odd minutes; Poisson clients draw exponential gaps. Requests
ask for exactly `output` tokens (the paper forces output lengths).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scheduler_core.job import Job
from scheduler_core.sim.trace import arena_trace_text, load_trace_file, parse_trace

_Arrival = tuple[float, str, int, int]  # time, tenant, prompt, output


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    jobs: tuple[Job, ...]
    duration_s: float
    weights: dict[str, float] = field(default_factory=dict)

    @property
    def tenants(self) -> list[str]:
        return sorted({job.tenant for job in self.jobs})


def _client(i: int) -> str:
    return f"client{i}"


def _fixed_rate(
    rng: np.random.Generator,
    tenant: str,
    rate: float,
    span: tuple[float, float],
    tokens: tuple[int, int],
    on_off_s: float | None = None,
) -> list[_Arrival]:
    """A client sending every 1/rate seconds from a random phase within `span`."""
    start, duration = span
    t = start + rng.random() / rate
    arrivals = []
    for _ in range(int(rate * duration)):
        t += 1 / rate
        if on_off_s is not None and int(t // on_off_s) % 2 == 1:
            continue
        arrivals.append((t, tenant, *tokens))
    return arrivals


def _uniform(
    rates: Sequence[float], duration: float, on_off_first: bool = False
) -> Callable[[np.random.Generator], list[_Arrival]]:
    def make(rng: np.random.Generator) -> list[_Arrival]:
        arrivals: list[_Arrival] = []
        for i, rate in enumerate(rates):
            on_off = 60.0 if on_off_first and i == 0 else None
            arrivals += _fixed_rate(rng, _client(i), rate, (0.0, duration), (256, 256), on_off)
        return arrivals

    return make


def _poisson_pair(
    rates: tuple[float, float], shapes: tuple[tuple[int, int], tuple[int, int]]
) -> Callable[[np.random.Generator], list[_Arrival]]:
    """One Poisson stream of total rate sum(rates), each request client 0 or 1."""

    def make(rng: np.random.Generator) -> list[_Arrival]:
        total = sum(rates)
        n = int(total * 600)
        times = np.cumsum(rng.exponential(1 / total, n))
        second = rng.random(n) > rates[0] / total
        return [
            (float(t), _client(int(c)), *shapes[int(c)]) for t, c in zip(times, second, strict=True)
        ]

    return make


def _increase(rng: np.random.Generator) -> list[_Arrival]:
    # Client 0 steady at 0.5 req/s; client 1 ramps linearly from 0.2 to 2 req/s.
    arrivals = _fixed_rate(rng, _client(0), 0.5, (0.0, 600.0), (256, 256))
    t = 0.0
    for _ in range(int(0.5 * (0.2 + 2.0) * 600)):
        t += 1 / (0.2 + (2.0 - 0.2) * t / 600)
        arrivals.append((t, _client(1), 256, 256))
    return arrivals


def _dist_shift(rng: np.random.Generator) -> list[_Arrival]:
    # Three 300 s phases: on/off (0.5 on/off, 2), overload (1, 1), proportional (0.5, 1.5).
    phases = (((0.5, 2.0), True), ((1.0, 1.0), False), ((0.5, 1.5), False))
    arrivals: list[_Arrival] = []
    for p, (rates, on_off) in enumerate(phases):
        for i, rate in enumerate(rates):
            period = 60.0 if on_off and i == 0 else None
            span = (300.0 * p, 300.0)
            arrivals += _fixed_rate(rng, _client(i), rate, span, (256, 256), period)
    return arrivals


_GENERATORS: dict[str, tuple[float, Callable[[np.random.Generator], list[_Arrival]]]] = {
    "overload": (360, _uniform((1.5, 3.0), 360)),
    "proportional": (600, _uniform((0.25, 0.5, 1.5), 600)),
    "on_off_less": (600, _uniform((0.5, 2.0), 600, on_off_first=True)),
    "on_off_overload": (600, _uniform((2.0, 3.0), 600, on_off_first=True)),
    "poisson_short_long": (600, _poisson_pair((8.0, 1.5), ((64, 64), (256, 256)))),
    "poisson_short_long_2": (600, _poisson_pair((8.0, 1.5), ((512, 32), (32, 512)))),
    "increase": (600, _increase),
    "dist_shift": (900, _dist_shift),
    "overload-multi": (360, _uniform((0.4, 0.4, 0.4, 0.6, 0.6, 0.6, 0.6, 0.6), 360)),
    "overload-weighted": (360, _uniform((0.8, 0.8, 1.2, 1.6), 360)),
}
_WEIGHTS = {"overload-weighted": {_client(i): float(i + 1) for i in range(4)}}

WORKLOAD_NAMES: tuple[str, ...] = (*_GENERATORS, "arena")


def make_workload(name: str, seed: int = 0) -> Workload:
    """A workload by name, `arena`, or `trace:PATH`; ValueError otherwise."""
    if name == "arena":
        jobs = parse_trace(arena_trace_text(), source="arena", prefix="arena")
        return Workload("arena", tuple(jobs), 600.0)
    if name.startswith("trace:"):
        path = Path(name.removeprefix("trace:"))
        jobs = load_trace_file(path, prefix=path.stem)
        duration = float(math.ceil(max(job.arrival_s for job in jobs)))
        return Workload(name, tuple(jobs), max(duration, 1.0))
    if name not in _GENERATORS:
        choices = ", ".join((*WORKLOAD_NAMES, "trace:PATH"))
        raise ValueError(f"unknown workload {name!r}; choose from {choices}")
    duration, generate = _GENERATORS[name]
    arrivals = sorted(generate(np.random.default_rng(seed)))
    generated = tuple(
        Job(f"{name}-{i}", tenant, t, prompt, output, output)
        for i, (t, tenant, prompt, output) in enumerate(arrivals)
    )
    return Workload(name, generated, float(duration), dict(_WEIGHTS.get(name, {})))
