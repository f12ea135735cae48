"""Served shares across a pool of engine workers: do two tenants get 20 : 80 by weight?

Against an already running Parity stack, --clients closed-loop clients per tenant (the
weight-1 tenant's key --key-w1, the weight-4 tenant's --key-w4) send non-streamed requests
of --max-tokens tokens for --warmup + --seconds seconds, retrying each 429 after its
Retry-After. Both tenants keep more requests waiting than the pool can run, so the split
follows the weights rather than demand. Counts the completion tokens of requests completed
inside the measured window, per tenant, and prints the shares, their deviation from the
weights, pooled throughput and statuses. --baseline-url/--baseline-key add a single-tenant
run of the same length and clients (e.g. the same pool serving one tenant) and print the
pooled throughput as a fraction of it. --vllm adds one vLLM server with FairScheduler and
the same weights, as a single-engine reference. Figures only; asserts nothing.

    .venv/bin/python bench/pool.py --key-w1 KEY_W1 --key-w4 KEY_W4 \\
        [--url http://127.0.0.1:8000] [--clients 300] [--seconds 60] [--warmup 10] \\
        [--baseline-url http://127.0.0.1:8001 --baseline-key KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Run as a script from anywhere: make the repository root importable first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import (  # noqa: E402
    Clients,
    Endpoint,
    Load,
    RequestResult,
    in_window,
    print_table,
    run_closed_loop,
    status_counts,
    timed_run,
)
from bench.targets import (  # noqa: E402
    add_server_args,
    check_parity_keys,
    chosen_targets,
    loopback_url,
    make_parser,
    run_on,
)

WEIGHTS = {"w1": 1.0, "w4": 4.0}


@dataclass(frozen=True, slots=True)
class PoolRun:
    """Each tenant's responses, and the measured window (monotonic seconds)."""

    results: dict[str, list[RequestResult]]
    start: float
    end: float

    def served_tokens(self, tenant: str) -> int:
        return sum(r.num_tokens for r in in_window(self.results[tenant], self.start, self.end))

    def tok_s(self) -> float:
        return sum(map(self.served_tokens, self.results)) / (self.end - self.start)


async def measure(args: argparse.Namespace, endpoints: dict[str, Endpoint]) -> PoolRun:
    seconds = args.warmup + args.seconds
    # The same demand in every run: a lone baseline tenant gets all the tenants' clients.
    num_users = args.clients * len(WEIGHTS) // len(endpoints)
    load = Load(
        args.model,
        args.max_tokens,
        stream=False,
        num_users=num_users,
        seconds=seconds,
        retry_429=True,
    )
    async with Clients(num_users * len(endpoints)) as client:
        start = time.monotonic()
        runs = asyncio.gather(*(run_closed_loop(client, e, load) for e in endpoints.values()))
        results = await timed_run(", ".join(endpoints), seconds, runs)
    # The warm-up lets every tenant build a backlog; only the steady state after it counts.
    return PoolRun(dict(zip(endpoints, results, strict=True)), start + args.warmup, start + seconds)


def share_rows(run: PoolRun) -> list[list[str]]:
    served = {tenant: run.served_tokens(tenant) for tenant in WEIGHTS}
    total_served = sum(served.values()) or 1
    total_weight = sum(WEIGHTS.values())
    rows = []
    for tenant, weight in WEIGHTS.items():
        share, expected = served[tenant] / total_served, weight / total_weight
        rows.append(
            [
                tenant,
                f"{weight:g}",
                str(served[tenant]),
                f"{share:.1%}",
                f"{expected:.0%}",
                f"{(share - expected) * 100:+.1f} pp",
                status_counts(run.results[tenant]),
            ]
        )
    return rows


def report(runs: dict[str, PoolRun], baseline: PoolRun | None) -> None:
    columns = ["tenant", "weight", "served tokens", "share", "by weight", "deviation", "statuses"]
    for target, run in runs.items():
        print_table(f"{target}: served in {run.end - run.start:.0f} s", columns, share_rows(run))
        print(f"{target}: pooled throughput {run.tok_s():.0f} tok/s")
    if baseline is not None:
        report_baseline(runs, baseline)


def report_baseline(runs: dict[str, PoolRun], baseline: PoolRun) -> None:
    statuses = status_counts(baseline.results["baseline"])
    print(f"baseline: {baseline.tok_s():.0f} tok/s ({statuses})")
    for target, run in runs.items():
        fraction = run.tok_s() / baseline.tok_s() if baseline.tok_s() else float("nan")
        print(f"{target}: pooled throughput is {fraction:.2f} of the baseline's")


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__ or "")
    add_server_args(parser, vllm_default=False)
    parser.add_argument("--key-w1", help="API key of Parity's weight-1 tenant")
    parser.add_argument("--key-w4", help="API key of Parity's weight-4 tenant")
    parser.add_argument("--clients", type=int, default=300, help="closed-loop clients per tenant")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens per request")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=10.0, help="unmeasured seconds first")
    parser.add_argument("--baseline-url", type=loopback_url, help="single-tenant baseline")
    parser.add_argument("--baseline-key", help="API key for --baseline-url")
    args = parser.parse_args()
    args.targets = chosen_targets(args)
    check_parity_keys(parser, args.targets, {"--key-w1": args.key_w1, "--key-w4": args.key_w4})
    if bool(args.baseline_url) != bool(args.baseline_key):
        parser.error("--baseline-url and --baseline-key go together")
    return args


def main() -> None:
    args = parse_args()
    measure_args = functools.partial(measure, args)
    keys = {"w1": args.key_w1, "w4": args.key_w4}
    weights = ",".join(f"{tenant}={weight:g}" for tenant, weight in WEIGHTS.items())
    runs = {
        t: run_on(t, args, keys=keys, weights=weights, measure=measure_args) for t in args.targets
    }
    baseline = None
    if args.baseline_url:
        endpoint = Endpoint(args.baseline_url, args.baseline_key, "baseline")
        baseline = asyncio.run(measure(args, {"baseline": endpoint}))
    report(runs, baseline)


if __name__ == "__main__":
    main()
