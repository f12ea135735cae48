"""The flood of issue 14: does a light tenant keep its latency while a heavy tenant floods?

A heavy tenant (weight 1) sends --heavy-requests non-streamed requests of 32 tokens over
--heavy-connections closed-loop connections, retrying each 429 after its Retry-After.
--light-delay seconds in, a light tenant (weight 2) sends --light-requests streams of 16
tokens from --light-concurrency users. Beforehand, light TTFT is measured idle with
--idle-requests sequential streams. Runs on Parity's gateway and on vLLM's own OpenAI
server with the same FairScheduler (tenants "heavy"/"light" via vllm_xargs, weights
heavy=1,light=2), then prints Parity/vLLM ratios. Figures only; asserts nothing.

    .venv/bin/python bench/flood.py --heavy-key HEAVY_KEY --light-key LIGHT_KEY \\
        [--url http://127.0.0.1:8000] [--heavy-requests 2000] [--heavy-connections 1200] \\
        [--light-requests 20] [--light-delay 6] [--target both|parity|vllm] [--no-vllm]

Smoke test on vLLM's server alone (starts and stops it, ~1 min):

    .venv/bin/python bench/flood.py --target vllm --heavy-requests 100 \\
        --heavy-connections 50 --light-requests 4 --light-delay 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

# Run as a script from anywhere: make the repository root importable first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import (  # noqa: E402
    Clients,
    Endpoint,
    Load,
    RequestResult,
    advancer,
    ms,
    percentiles,
    print_table,
    progress_bar,
    rates,
    ratio,
    run_closed_loop,
    status_counts,
)
from bench.targets import (  # noqa: E402
    add_server_args,
    add_target_arg,
    check_parity_keys,
    chosen_targets,
    make_parser,
    run_on,
)

_SPAWN = multiprocessing.get_context("spawn")
HEAVY_TOKENS = 32
LIGHT_TOKENS = 16
WEIGHTS = "heavy=1,light=2"  # what Parity's issue 14 set-up gives the two tenants


@dataclass(slots=True)
class FloodRun:
    """Everything one target answered: idle light streams, then the flood and the light
    streams sent into it."""

    idle: list[RequestResult]
    light: list[RequestResult]
    heavy: list[RequestResult]
    wall_s: float

    def ttft(self, results: list[RequestResult]) -> dict[int, float]:
        return percentiles(r.ttft_s for r in results if r.ok)

    def heavy_rates(self) -> tuple[float, float]:
        """(req/s, tok/s) between the first and the last successful heavy completion."""
        ends = sorted(r.ended_at for r in self.heavy if r.ok)
        return rates(self.heavy, ends[0], ends[-1]) if len(ends) > 1 else (0.0, 0.0)


def light_load(args: argparse.Namespace, *, num_users: int, num_requests: int) -> Load:
    return Load(
        args.model,
        LIGHT_TOKENS,
        stream=True,
        num_users=num_users,
        num_requests=num_requests,
        seconds=args.max_seconds,
    )


def heavy_load(args: argparse.Namespace) -> Load:
    return Load(
        args.model,
        HEAVY_TOKENS,
        stream=False,
        num_users=args.heavy_connections,
        num_requests=args.heavy_requests,
        seconds=args.max_seconds,
        retry_429=True,
    )


async def measure(args: argparse.Namespace, endpoints: dict[str, Endpoint]) -> FloodRun:
    heavy, light = endpoints["heavy"], endpoints["light"]
    # The light tenant runs in a process of its own: one event loop driving a thousand
    # heavy connections falls seconds behind, and the light tenant's requests would wait
    # for it on this side, whatever the server does. (CLOCK_MONOTONIC is system-wide, so
    # both processes' timestamps compare.)
    async with Clients(args.heavy_connections) as heavy_client:
        idle_load = light_load(args, num_users=1, num_requests=args.idle_requests)
        idle = await run_closed_loop(heavy_client, light, idle_load)
        start = time.monotonic()
        with progress_bar() as progress, ProcessPoolExecutor(1, mp_context=_SPAWN) as pool:
            light_run = asyncio.get_running_loop().run_in_executor(
                pool,
                run_light,
                args.light_delay,
                light_load(
                    args, num_users=args.light_concurrency, num_requests=args.light_requests
                ),
                light,
            )
            on_heavy = advancer(progress, "heavy", args.heavy_requests)
            heavy_run = run_closed_loop(heavy_client, heavy, heavy_load(args), on_heavy)
            heavy_results, light_results = await asyncio.gather(heavy_run, light_run)
    return FloodRun(idle, light_results, heavy_results, time.monotonic() - start)


def run_light(delay_s: float, load: Load, light: Endpoint) -> list[RequestResult]:
    """The light tenant's streams, `delay_s` into the flood (in the child process)."""
    return asyncio.run(_light_streams(delay_s, load, light))


async def _light_streams(delay_s: float, load: Load, light: Endpoint) -> list[RequestResult]:
    async with Clients(load.num_users) as clients:
        # A light tenant is a running program, not one that starts mid-flood: the first
        # request of a fresh client process pays its own imports and set-up, which took up
        # to a second here on the saturated machine and is no server's doing. One
        # unauthenticated request warms it (its connection may or may not last the wait).
        with contextlib.suppress(httpx.HTTPError):
            await clients.next_user().get(f"{light.url}/v1/models")
        await asyncio.sleep(delay_s)
        return await run_closed_loop(clients, light, load)


def figures(run: FloodRun) -> list[str]:
    idle, flood = run.ttft(run.idle), run.ttft(run.light)
    req_s, tok_s = run.heavy_rates()
    return [
        f"{ms(idle[50])} / {ms(idle[95])}",
        f"{ms(flood[50])} / {ms(flood[95])}",
        status_counts(run.light),
        status_counts(run.heavy),
        f"{req_s:.1f} req/s, {tok_s:.0f} tok/s",
        f"{run.wall_s:.1f} s",
    ]


FIGURE_NAMES = (
    "light TTFT p50 / p95, idle",
    "light TTFT p50 / p95, flood",
    "light statuses",
    "heavy statuses",
    "heavy throughput",
    "flood wall time",
)


def report(runs: dict[str, FloodRun]) -> None:
    columns = {name: figures(run) for name, run in runs.items()}
    rows = [[label, *(c[i] for c in columns.values())] for i, label in enumerate(FIGURE_NAMES)]
    print_table("flood", ["", *runs], rows)
    if "parity" in runs and "vllm" in runs:
        parity, vllm = runs["parity"], runs["vllm"]
        p, v = parity.ttft(parity.light), vllm.ttft(vllm.light)
        print_table(
            "Parity / vLLM",
            ["", "ratio"],
            [
                ["light TTFT p50, flood", ratio(p[50], v[50])],
                ["light TTFT p95, flood", ratio(p[95], v[95])],
                ["heavy req/s", ratio(parity.heavy_rates()[0], vllm.heavy_rates()[0])],
            ],
        )


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__ or "")
    add_server_args(parser, vllm_default=True)
    add_target_arg(parser)
    parser.add_argument("--heavy-key", help="API key of Parity's heavy tenant (weight 1)")
    parser.add_argument("--light-key", help="API key of Parity's light tenant (weight 2)")
    parser.add_argument("--heavy-requests", type=int, default=2000, help="heavy requests in all")
    parser.add_argument(
        "--heavy-connections", type=int, default=1200, help="heavy closed-loop users"
    )
    parser.add_argument("--light-requests", type=int, default=20, help="light streams in the flood")
    parser.add_argument("--light-concurrency", type=int, default=4, help="light closed-loop users")
    parser.add_argument("--light-delay", type=float, default=6.0, help="seconds into the flood")
    parser.add_argument(
        "--idle-requests", type=int, default=10, help="sequential light streams before the flood"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=900.0,
        help="no request starts after this long (per phase)",
    )
    args = parser.parse_args()
    args.targets = chosen_targets(args)
    check_parity_keys(
        parser, args.targets, {"--heavy-key": args.heavy_key, "--light-key": args.light_key}
    )
    return args


def main() -> None:
    args = parse_args()
    keys = {"heavy": args.heavy_key, "light": args.light_key}
    runs = {
        target: run_on(
            target, args, keys=keys, weights=WEIGHTS, measure=functools.partial(measure, args)
        )
        for target in args.targets
    }
    report(runs)


if __name__ == "__main__":
    main()
