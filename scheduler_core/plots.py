"""Figure 3-style plots (per-tenant service rate over time, policies side by side)
and application completion-time CDFs.

matplotlib is imported here only, and this module only when plots are asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scheduler_core.app_experiment import AppCell
from scheduler_core.experiment import Cell
from scheduler_core.metrics import service_rates
from scheduler_core.report import safe_name

_NUM_TICKS = 100
_MAX_COLUMNS = 4


def _pyplot() -> Any:
    # Imported on first use only, with a backend that needs no display.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    _pyplot().close(figure)
    return path


def plot_service_rates(cells: Sequence[Cell], directory: Path) -> Path:
    """One PNG for one workload: a panel per policy, a line per tenant."""
    plt = _pyplot()
    workload = cells[0].workload
    # Cover the drain after the last arrival too: that is where policies differ most.
    end = max(workload.duration_s, *(cell.result.makespan_s for cell in cells))
    centers = np.linspace(0.0, end, _NUM_TICKS)
    num_columns = min(len(cells), _MAX_COLUMNS)
    num_rows = -(-len(cells) // num_columns)
    figure, axes = plt.subplots(
        num_rows,
        num_columns,
        figsize=(4 * num_columns, 3.2 * num_rows),
        sharey=True,
        squeeze=False,
    )
    flat = list(axes.flat)
    for axis, cell in zip(flat, cells, strict=False):
        rates = service_rates(cell.result.records, workload.tenants, centers)
        for column, tenant in enumerate(workload.tenants):
            axis.plot(centers, rates[:, column], linewidth=1, label=tenant)
        axis.set_title(cell.policy)
        axis.set_xlabel("time (s)")
    for axis in flat[len(cells) :]:
        axis.set_visible(False)
    for row in axes:
        row[0].set_ylabel("service (cost units/s, 60 s window)")
    if len(workload.tenants) <= 8:
        flat[len(cells) - 1].legend(fontsize="small")
    figure.suptitle(f"{workload.name}: service rate per tenant")
    return _save(figure, directory / f"{safe_name(workload.name)}.png")


def plot_completion_cdfs(cells: Sequence[AppCell], directory: Path) -> Path:
    """One PNG for one application workload: a completion-time CDF per policy."""
    plt = _pyplot()
    workload = cells[0].workload
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for cell in cells:
        completions = np.sort([outcome.completion_s for outcome in cell.outcomes])
        fraction = np.arange(1, len(completions) + 1) / max(len(completions), 1)
        mean = cell.summary.mean_completion_s
        axis.step(completions, fraction, where="post", label=f"{cell.policy} (mean {mean:.0f} s)")
    axis.set_xscale("log")
    axis.set_xlabel("application completion time (s, log scale)")
    axis.set_ylabel("fraction of applications")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small", loc="lower right")
    axis.set_title(f"{workload.name}: application completion times")
    return _save(figure, directory / f"{safe_name(workload.name)}_completion_cdf.png")
