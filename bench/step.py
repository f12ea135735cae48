"""Cost of one engine step: Parity's fair schedulers against vLLM's own, no model run.

Two pairs: `FairScheduler` against vLLM's `Scheduler` (synchronous scheduling), and
`FairAsyncScheduler` against vLLM's `AsyncScheduler` (what vLLM runs on GPUs: step n+1 is
scheduled before step n's output is fed back). Each is built as the engine core builds it
(the tiny local model's config, one KV cache group, prefix caching off, chunked prefill
on), resolved through `scheduler_cls` as vLLM resolves it, and driven as the engine core
drives it, with hand-made model outputs (`tests/workers/vllm_factories.py`). A step is
`schedule()` plus `update_from_output()`; `add_request()` is timed on its own (the fair
queue takes arrivals in at the next `schedule()`, so that cost is in the step). The
workload is issue 16's: 1,000 tenants with Zipf-like request counts, about 10,000 requests
waiting and 250 running throughout (each finished request is replaced by a new one).
The contenders take turns step by step, so drift in the machine's speed falls on all.
Prints median times and fair / vLLM ratios; asserts nothing.

    .venv/bin/python bench/step.py [--tenants 1000] [--waiting 10000] [--running 250] \\
        [--steps 300]
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script from anywhere: make the repository root importable first.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.progress import track  # noqa: E402
from rich.table import Table  # noqa: E402
from vllm.v1.core.sched.output import SchedulerOutput  # noqa: E402
from vllm.v1.core.sched.scheduler import Scheduler  # noqa: E402
from vllm.v1.structured_output import StructuredOutputManager  # noqa: E402

from tests.workers.vllm_factories import (  # noqa: E402
    BLOCK_SIZE,
    make_kv_cache_config,
    make_request,
    make_vllm_config,
    runner_output,
)
from workers.tiny_model import ensure_tiny_model  # noqa: E402

PROMPT_TOKENS = 32
# Output lengths vary, so a few requests finish and a few are admitted at every step, as
# in a serving engine's steady state (equal lengths would finish the batch in lockstep).
MIN_TOKENS, MAX_TOKENS = 16, 112


@dataclass(slots=True)
class Timings:
    steps: list[float] = field(default_factory=list)
    schedules: list[float] = field(default_factory=list)
    updates: list[float] = field(default_factory=list)
    adds: list[float] = field(default_factory=list)


class Workload:
    """Tenants drawn Zipf-like (weight 1/rank) and output lengths drawn uniformly: the
    same sequence for both schedulers."""

    def __init__(self, num_tenants: int, seed: int = 0) -> None:
        self.tenants = [f"tenant{i}" for i in range(num_tenants)]
        self.weights = [1.0 / (rank + 1) for rank in range(num_tenants)]
        self.random = random.Random(seed)
        self.ids = itertools.count()

    def request(self) -> Any:
        tenant = self.random.choices(self.tenants, self.weights)[0]
        max_tokens = self.random.randint(MIN_TOKENS, MAX_TOKENS)
        return make_request(
            f"r{next(self.ids)}", tenant=tenant, prompt_tokens=PROMPT_TOKENS, max_tokens=max_tokens
        )


@dataclass(frozen=True, slots=True)
class Contender:
    label: str
    scheduler_cls: str  # as an operator names it to vLLM
    async_scheduling: bool


PAIRS = [
    (
        Contender("vLLM Scheduler", "vllm.v1.core.sched.scheduler.Scheduler", False),
        Contender("FairScheduler", "workers.vllm_scheduler.FairScheduler", False),
    ),
    (
        Contender("vLLM AsyncScheduler", "vllm.v1.core.sched.async_scheduler.AsyncScheduler", True),
        Contender("FairScheduler (async)", "workers.vllm_scheduler.FairScheduler", True),
    ),
]


def build(contender: Contender, model_dir: Path, args: argparse.Namespace) -> Scheduler:
    # Room for every running request's blocks, never a preemption: the step's own cost.
    blocks_per_request = -(-(PROMPT_TOKENS + MAX_TOKENS) // BLOCK_SIZE)
    num_blocks = 2 * args.running * blocks_per_request
    config = make_vllm_config(
        model_dir,
        max_num_seqs=args.running,
        max_num_batched_tokens=args.running * PROMPT_TOKENS,
        num_blocks=num_blocks,
        async_scheduling=contender.async_scheduling,
    )
    config.scheduler_config.scheduler_cls = contender.scheduler_cls
    cls = config.scheduler_config.get_scheduler_cls()
    return cls(  # type: ignore[call-arg]
        vllm_config=config,
        kv_cache_config=make_kv_cache_config(num_blocks),
        structured_output_manager=StructuredOutputManager(config),
        block_size=BLOCK_SIZE,
    )


class Driver:
    """Steps one scheduler as the engine core does: synchronously, or one step ahead."""

    def __init__(self, scheduler: Scheduler, workload: Workload, ahead: bool) -> None:
        self.scheduler = scheduler
        self.workload = workload
        self.ahead = ahead
        self.pending: tuple[SchedulerOutput, Any] | None = None

    def fill(self, num_waiting: int, warmup_steps: int) -> None:
        for _ in range(num_waiting):
            self.scheduler.add_request(self.workload.request())
        for _ in range(warmup_steps):
            self.step(Timings())

    def step(self, timings: Timings) -> None:
        scheduler = self.scheduler
        begin = time.perf_counter()
        output = scheduler.schedule()
        scheduled = time.perf_counter()
        outputs = runner_output(scheduler, output)  # type: ignore[arg-type]
        if self.ahead:  # feed back the previous step's output, as the batch queue does
            self.pending, (output, outputs) = (output, outputs), self.pending or (None, None)
            if output is None:
                return
        made = time.perf_counter()
        engine_outputs = scheduler.update_from_output(output, outputs)
        updated = time.perf_counter()
        timings.schedules.append(scheduled - begin)
        timings.updates.append(updated - made)
        timings.steps.append((scheduled - begin) + (updated - made))
        finished = sum(
            1 for o in engine_outputs.values() for out in o.outputs if out.finish_reason is not None
        )
        for _ in range(finished):  # keep the queue at its depth
            request = self.workload.request()
            added = time.perf_counter()
            scheduler.add_request(request)
            timings.adds.append(time.perf_counter() - added)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--running", type=int, default=250)
    parser.add_argument("--steps", type=int, default=300, help="timed steps per scheduler")
    args = parser.parse_args()

    model_dir = ensure_tiny_model(ROOT / "var" / "models" / "parity-tiny")
    console = Console()
    contenders = [contender for pair in PAIRS for contender in pair]
    drivers, timings = {}, {}
    for contender in contenders:
        with console.status(f"filling {contender.label} with {args.waiting:,} requests"):
            scheduler = build(contender, model_dir, args)
            drivers[contender] = Driver(
                scheduler, Workload(args.tenants), contender.async_scheduling
            )
            drivers[contender].fill(args.waiting, warmup_steps=20)
            timings[contender] = Timings()
    for _ in track(range(args.steps), description="stepping each scheduler in turn"):
        for contender in contenders:
            drivers[contender].step(timings[contender])

    for baseline, fair in PAIRS:
        print_pair(console, baseline, fair, timings)
    for contender in contenders:
        scheduler = drivers[contender].scheduler
        console.print(
            f"{contender.label} ({type(scheduler).__name__}): {len(scheduler.waiting)} waiting, "
            f"{len(scheduler.running)} running at the end"
        )


def print_pair(
    console: Console, baseline: Contender, fair: Contender, timings: dict[Contender, Timings]
) -> None:
    table = Table(title=f"one engine step, medians: {fair.label} against {baseline.label}")
    table.add_column("")
    table.add_column(baseline.label, justify="right")
    table.add_column(fair.label, justify="right")
    table.add_column("fair / vLLM", justify="right")
    for label, attribute, unit in (
        ("step (schedule + update)", "steps", 1e3),
        ("schedule()", "schedules", 1e3),
        ("update_from_output()", "updates", 1e3),
        ("add_request()", "adds", 1e6),
    ):
        medians = [statistics.median(getattr(timings[c], attribute)) for c in (baseline, fair)]
        suffix = " ms" if unit == 1e3 else " µs"
        table.add_row(
            label, *(f"{m * unit:.2f}{suffix}" for m in medians), f"{medians[1] / medians[0]:.2f}x"
        )
    console.print(table)


if __name__ == "__main__":
    main()
