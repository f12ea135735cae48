"""Train the MLP demand predictor and compare it with the baselines on a held-out stream.

    python -m scheduler_core.predict train [--apps 6000] [--seed 0] [--epochs 100]
        [--out PATH] [--report PATH|-]

Trains on `training_apps(seed, apps)`, tests on `training_apps(seed + 1, apps // 3)`
(other tenants, other styles), saves the weights (default: the shipped file)
and prints a markdown table of held-out MAPE. Bad input exits with status 2
and a one-line message.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter as _timer
from typing import Any, NoReturn

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from scheduler_core.demand import MovingAverageDemand, OracleDemand
from scheduler_core.predict import DEFAULT_WEIGHTS
from scheduler_core.predict.evaluate import (
    Contender,
    TrainReport,
    inference_us,
    mape,
    relative_errors,
    unknown_type,
)
from scheduler_core.predict.features import Masking, training_matrix
from scheduler_core.predict.mlp import DemandModel, MLPDemand, build_network
from scheduler_core.sim.app_workloads import training_apps

MIN_APPS = 10


@dataclass(frozen=True, slots=True)
class TrainConfig:
    num_apps: int = 6000
    seed: int = 0
    epochs: int = 100
    hidden: tuple[int, ...] = (32, 32)
    batch_size: int = 256
    learning_rate: float = 3e-3
    masking: Masking = field(default_factory=Masking)

    def __post_init__(self) -> None:
        if self.num_apps < MIN_APPS:
            raise ValueError(f"--apps must be >= {MIN_APPS}, got {self.num_apps}")
        if self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")

    @property
    def test_seed(self) -> int:
        return self.seed + 1

    @property
    def num_test(self) -> int:
        return max(MIN_APPS, self.num_apps // 3)


# -- training -----------------------------------------------------------------------------


def fit(
    features: np.ndarray,
    log_costs: np.ndarray,
    config: TrainConfig,
    on_epoch: Callable[[], None] = lambda: None,
) -> DemandModel:
    """Minibatch Adam on standardised features, seeded so a rerun gives the same weights.

    The first half of the epochs minimises squared error in log space, which
    converges from any start; the second half minimises the relative error
    `|pred / true - 1|` itself (from a random start its exp() gradients stall).
    """
    torch.manual_seed(config.seed)
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
    inputs = torch.from_numpy((features - mean) / std)
    targets = torch.from_numpy(log_costs)
    network = build_network(features.shape[1], config.hidden)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    order = torch.Generator().manual_seed(config.seed)
    for epoch in range(config.epochs):
        loss_of = _log_squared_error if epoch < config.epochs // 2 else _relative_error
        for batch in torch.randperm(len(targets), generator=order).split(config.batch_size):
            loss = loss_of(network(inputs[batch]).squeeze(-1), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        on_epoch()
    network.eval()
    return DemandModel.from_network(network, mean, std)


def _log_squared_error(predicted: Any, target: Any) -> Any:
    return ((predicted - target) ** 2).mean()


def _relative_error(predicted: Any, target: Any) -> Any:
    return (torch.exp(predicted - target) - 1).abs().mean()


@contextmanager
def _single_thread() -> Iterator[None]:
    # Tiny matrices gain nothing from threads, and one thread makes the
    # weights the same on every machine. The setting is global: restore it.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# -- evaluation ---------------------------------------------------------------------------


def contenders(model: DemandModel) -> tuple[Contender, ...]:
    """The report's columns: the MLP and the per-type moving average, with the type
    declared and hidden, and the oracle that bounds them."""
    return (
        Contender("mlp", lambda: MLPDemand(model)),
        Contender("moving_average", MovingAverageDemand),
        Contender("oracle", OracleDemand),
        Contender("mlp_unknown_type", lambda: MLPDemand(model), unknown_type),
        Contender("moving_average_unknown_type", MovingAverageDemand, unknown_type),
    )


def train(config: TrainConfig, out: Path) -> TrainReport:
    """Train, save the weights to `out`, and evaluate the saved file on held-out data."""
    train_apps = training_apps(config.seed, config.num_apps)
    test_apps = training_apps(config.test_seed, config.num_test)
    features, log_costs = training_matrix(train_apps, masking=config.masking, seed=config.seed)
    with _single_thread(), _progress(config.epochs) as advance:
        start = _timer()  # the report's training time; no scheduling decision reads it
        fit(features, log_costs, config, on_epoch=advance).save(out)
        train_seconds = _timer() - start
        model = DemandModel.load(out)  # report what ships, not what is in memory
        tables = {
            contender.name: mape(relative_errors(contender.make(), test_apps, contender.view))
            for contender in contenders(model)
        }
        speed = inference_us(MLPDemand(model), test_apps)
    return TrainReport(
        tables, speed, round(train_seconds, 2), len(train_apps), len(test_apps), out.stat().st_size
    )


@contextmanager
def _progress(epochs: int) -> Iterator[Callable[[], None]]:
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("training", total=epochs)
        yield lambda: progress.advance(task)


# -- the command line ---------------------------------------------------------------------


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = _Parser(prog="python -m scheduler_core.predict", description=__doc__)
    parser.add_argument("command", choices=["train"], help="what to do")
    parser.add_argument("--apps", type=int, default=defaults.num_apps, help="training apps")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="weights file")
    parser.add_argument("--report", metavar="PATH|-", help="also write the report as JSON")
    return parser


def _config(args: argparse.Namespace) -> TrainConfig:
    try:
        return TrainConfig(num_apps=args.apps, seed=args.seed, epochs=args.epochs)
    except ValueError as error:
        raise UsageError(str(error)) from error


def _writable(path: Path) -> Path:
    # Checked before training: a typo in --out should not cost a training run.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create directory {path.parent}: {error.strerror}") from error
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not a file")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        config = _config(args)
        out = _writable(args.out)
        report_path = None if args.report in (None, "-") else _writable(Path(args.report))
    except UsageError as error:
        print(f"predict: error: {error}", file=sys.stderr)
        return 2
    report = train(config, out)
    table_stream = sys.stderr if args.report == "-" else sys.stdout  # keep stdout valid JSON
    if args.report == "-":
        json.dump(report.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif report_path is not None:
        report_path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    print(report.markdown(), file=table_stream)
    print(f"weights written to {out}", file=table_stream)
    return 0
