"""Reproduce the VTC and Justitia papers' evaluations in the simulator.

    python -m scheduler_core.reproduce vtc [--workload NAME[,NAME...]|all]
        [--policies fcfs,lcf,rpm5,rpm20,vtc,vtc-predict,vtc-oracle]
        [--profile a10g-llama2-7b] [--seed 0] [--json PATH|-]
        [--dump-requests DIR] [--plots DIR]

    python -m scheduler_core.reproduce justitia [--workload NAME[,NAME...]|all]
        [--policies fcfs,vtc,vtc-predict,justitia,justitia-oracle]
        [--profile a100-llama2-13b] [--seed 0] [--json PATH|-]
        [--dump-requests DIR] [--plots DIR]

Prints a markdown table (workload x policy). Bad input exits with status 2
and a one-line message.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from rich.console import Console
from rich.progress import Progress

from scheduler_core.app_experiment import AppCell, run_app_cell, solo_times
from scheduler_core.experiment import Cell, run_cell
from scheduler_core.job import Job
from scheduler_core.registry import is_policy_name
from scheduler_core.report import (
    app_markdown_table,
    json_document,
    markdown_table,
    write_json,
    write_requests_csv,
)
from scheduler_core.sim.app_workloads import APP_WORKLOAD_NAMES, AppWorkload, make_app_workload
from scheduler_core.sim.engine import validate_jobs
from scheduler_core.sim.profiles import EngineProfile, get_profile
from scheduler_core.sim.workloads import WORKLOAD_NAMES, Workload, make_workload

_W = TypeVar("_W")
DEFAULT_POLICIES = "fcfs,lcf,rpm5,rpm20,vtc,vtc-predict,vtc-oracle"
DEFAULTS = {
    "vtc": (DEFAULT_POLICIES, "a10g-llama2-7b"),
    "justitia": ("fcfs,vtc,vtc-predict,justitia,justitia-oracle", "a100-llama2-13b"),
}


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m scheduler_core.reproduce", description=__doc__)
    parser.add_argument("experiment", choices=list(DEFAULTS), help="which paper to reproduce")
    parser.add_argument("--workload", default="all", help="names, comma-separated, or all")
    parser.add_argument("--policies", help="comma-separated (default: the paper's set)")
    parser.add_argument("--profile", help="engine profile (default: the paper's testbed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_path", metavar="PATH|-")
    parser.add_argument("--dump-requests", type=Path, metavar="DIR")
    parser.add_argument("--plots", type=Path, metavar="DIR")
    return parser


def _split(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise UsageError(f"empty list: {value!r}")
    return names


def _load(value: str, seed: int, every: Sequence[str], make: Callable[[str, int], _W]) -> list[_W]:
    names = list(every) if value == "all" else _split(value)
    try:
        return [make(name, seed) for name in names]
    except ValueError as error:
        raise UsageError(str(error)) from error


def _policies(value: str, experiment: str) -> list[str]:
    names = _split(value)
    for name in names:
        if not is_policy_name(name):
            raise UsageError(f"unknown policy {name!r}; try {DEFAULTS[experiment][0]} or rpmN")
    return names


def _profile(name: str) -> EngineProfile:
    try:
        return get_profile(name)
    except ValueError as error:
        raise UsageError(str(error)) from error


def _check_fit(jobs_per_workload: Sequence[Sequence[Job]], profile: EngineProfile) -> None:
    # Checked before the run starts: a trace's 20k-token prompt on a
    # 10k-token pool is bad input, not a failure halfway through the suite.
    try:
        for jobs in jobs_per_workload:
            validate_jobs(jobs, profile)
    except ValueError as error:
        raise UsageError(str(error)) from error


def _directory(path: Path | None) -> Path | None:
    if path is not None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot create directory {path}: {error.strerror}") from error
    return path


def _run(
    workloads: Sequence[Workload], policies: Sequence[str], profile: EngineProfile
) -> list[Cell]:
    cells = []
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("simulating", total=len(workloads) * len(policies))
        for workload in workloads:
            for policy in policies:
                progress.update(task, description=f"{workload.name} / {policy}")
                cells.append(run_cell(workload, policy, profile))
                progress.advance(task)
    return cells


def _run_apps(
    workloads: Sequence[AppWorkload], policies: Sequence[str], profile: EngineProfile
) -> list[AppCell]:
    cells = []
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("simulating", total=len(workloads) * (len(policies) + 1))
        for workload in workloads:
            progress.update(task, description=f"{workload.name} / each app alone")
            solo = solo_times(workload.apps, profile)
            progress.advance(task)
            for policy in policies:
                progress.update(task, description=f"{workload.name} / {policy}")
                cells.append(run_app_cell(workload, policy, profile, solo))
                progress.advance(task)
    return cells


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        default_policies, default_profile = DEFAULTS[args.experiment]
        profile = _profile(args.profile or default_profile)
        policies = _policies(args.policies or default_policies, args.experiment)
        if args.experiment == "justitia":
            app_workloads = _load(args.workload, args.seed, APP_WORKLOAD_NAMES, make_app_workload)
            _check_fit([w.jobs for w in app_workloads], profile)
        else:
            workloads = _load(args.workload, args.seed, WORKLOAD_NAMES, make_workload)
            _check_fit([w.jobs for w in workloads], profile)
        dump_dir, plot_dir = _directory(args.dump_requests), _directory(args.plots)
    except UsageError as error:
        print(f"reproduce: error: {error}", file=sys.stderr)
        return 2
    cells: Sequence[Cell | AppCell]
    if args.experiment == "justitia":
        cells = app_cells = _run_apps(app_workloads, policies, profile)
        table = app_markdown_table(app_cells)
    else:
        cells = vtc_cells = _run(workloads, policies, profile)
        table = markdown_table(vtc_cells)
    _emit(json_document(profile.name, args.seed, cells), table, args.json_path)
    if dump_dir is not None:
        for cell in cells:
            write_requests_csv(cell, dump_dir)
    if plot_dir is not None:
        from scheduler_core.plots import plot_completion_cdfs, plot_service_rates

        for i in range(0, len(cells), len(policies)):
            if args.experiment == "justitia":
                plot_completion_cdfs(app_cells[i : i + len(policies)], plot_dir)
            else:
                plot_service_rates(vtc_cells[i : i + len(policies)], plot_dir)
    return 0


def _emit(document: dict[str, Any], table: str, json_path: str | None) -> None:
    table_stream = sys.stdout
    if json_path == "-":
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
        table_stream = sys.stderr  # keep stdout valid JSON
    elif json_path is not None:
        write_json(document, Path(json_path))
    print(table, file=table_stream)


if __name__ == "__main__":
    sys.exit(main())
