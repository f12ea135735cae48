"""Application-level metrics: completion times, and the ideal fair-sharing reference.

- Completion of an application: when its last call finishes, minus when the
  application arrived.
- Ideal fair-sharing completion: the later of
  * its finish in the fluid GPS reference: the memory work (KV token-steps,
    `p*d + d^2/2` per call) the engine delivered in the run, spread evenly
    over each call's decode interval, shared at every instant among the
    unfinished applications in proportion to their tenants' weights, each
    application needing its true cost; and
  * its arrival plus its *solo* time: how long it takes alone on an idle
    engine (no schedule can beat its own dependency chain and tool delays).
- Slowdown: completion / ideal completion (both measured from arrival).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scheduler_core.apps import Application
from scheduler_core.costs import MemoryCost
from scheduler_core.sim.records import RequestRecord, RequestStatus
from scheduler_core.virtual_time import VirtualClock

_MEMORY = MemoryCost()


@dataclass(frozen=True, slots=True)
class AppOutcome:
    app_id: str
    tenant: str
    arrival_s: float
    finish_s: float
    ideal_finish_s: float

    @property
    def completion_s(self) -> float:
        return self.finish_s - self.arrival_s

    @property
    def ideal_completion_s(self) -> float:
        return self.ideal_finish_s - self.arrival_s

    @property
    def slowdown(self) -> float:
        return self.completion_s / max(self.ideal_completion_s, 1e-9)


def app_finish_times(records: Sequence[RequestRecord]) -> dict[str, float]:
    """When each application's last call finished (applications with an unfinished call omitted)."""
    finish: dict[str, float] = {}
    unfinished: set[str] = set()
    for record in records:
        if record.app is None:
            continue
        if record.status is not RequestStatus.FINISHED or record.finish_s is None:
            unfinished.add(record.app)
            continue
        finish[record.app] = max(finish.get(record.app, 0.0), record.finish_s)
    return {app: t for app, t in finish.items() if app not in unfinished}


def delivered_work(records: Sequence[RequestRecord]) -> tuple[np.ndarray, np.ndarray]:
    """The engine's cumulative memory work over time, as breakpoints (times, work).

    Each finished call's `p*d + d^2/2` is spread evenly over [first token,
    finish]; between breakpoints the work grows linearly.
    """
    events: list[tuple[float, float]] = []
    instant: list[tuple[float, float]] = []
    for r in records:
        if r.first_token_s is None or r.finish_s is None:
            continue
        cost = _MEMORY.total(r.prompt_tokens, r.output_tokens)
        span = r.finish_s - r.first_token_s
        if span > 0:
            events += [(r.first_token_s, cost / span), (r.finish_s, -cost / span)]
        else:
            instant.append((r.finish_s, cost))
    times = np.array(sorted({t for t, _ in events} | {t for t, _ in instant} | {0.0}))
    rate_change = np.zeros(len(times))
    jumps = np.zeros(len(times))
    for t, change in events:
        rate_change[np.searchsorted(times, t)] += change
    for t, cost in instant:
        jumps[np.searchsorted(times, t)] += cost
    rate = np.cumsum(rate_change)  # rate on [times[k], times[k+1])
    gained = np.concatenate(([0.0], rate[:-1] * np.diff(times)))
    work = np.cumsum(gained + jumps)
    return times, work


def reference_finish_times(
    apps: Sequence[Application],
    weights: Mapping[str, float],
    times: np.ndarray,
    work: np.ndarray,
) -> dict[str, float]:
    """Each application's finish in the fluid GPS reference fed with `work`.

    The reference is Justitia's own `VirtualClock`, given the work of each
    stretch between breakpoints and arrivals (a constant rate within it), so
    a departure's time inside the stretch is exact. Work delivered while
    nobody is backlogged is lost to the reference, as to an idle server.
    """
    order = sorted(apps, key=lambda app: app.arrival_s)
    clock = VirtualClock()
    finish: dict[str, float] = {}
    i = 0
    for k in range(len(times) - 1):
        t, end = float(times[k]), float(times[k + 1])
        rate = (work[k + 1] - work[k]) / (end - t)
        while t < end:
            while i < len(order) and order[i].arrival_s <= t:
                app = order[i]
                weight = weights.get(app.tenant, 1.0)
                clock.set(app.app_id, clock.now + app.true_cost / weight, weight)
                i += 1
            stop = min(end, order[i].arrival_s) if i < len(order) else end
            for app_id, used in clock.advance(rate * (stop - t)):
                finish[app_id] = t + used / rate if rate > 0 else t
            t = stop
    # The record ended before the reference drained (it cannot when all work was recorded).
    horizon = max(float(times[-1]) if len(times) else 0.0, order[-1].arrival_s if order else 0.0)
    return {app.app_id: finish.get(app.app_id, horizon) for app in apps}


def outcomes(
    apps: Sequence[Application],
    records: Sequence[RequestRecord],
    weights: Mapping[str, float],
    solo_s: Mapping[str, float],
) -> list[AppOutcome]:
    """Every finished application's completion next to its ideal fair-sharing one."""
    finish = app_finish_times(records)
    times, work = delivered_work(records)
    reference = reference_finish_times(apps, weights, times, work)
    result = []
    for app in apps:
        if app.app_id not in finish:
            continue
        ideal = max(reference[app.app_id], app.arrival_s + solo_s[app.app_id])
        result.append(AppOutcome(app.app_id, app.tenant, app.arrival_s, finish[app.app_id], ideal))
    return result
