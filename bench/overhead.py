"""What Parity's gateway costs over vLLM's own OpenAI server on the same engine.

Closed-loop streams of --max-tokens tokens (ignore_eos) at each --concurrency level, each
level for --seconds after --warmup seconds; only requests that complete inside the measured
window count. Prints req/s, tok/s and TTFT p50/p99 per level for Parity (--url, --key) and
for vLLM's server with the same engine settings and FairScheduler (one tenant), then the
Parity/vLLM ratios per level and the idle TTFT difference. Figures only; asserts nothing.

    .venv/bin/python bench/overhead.py --key API_KEY [--url http://127.0.0.1:8000] \\
        [--concurrency 1,16,64] [--seconds 15] [--max-tokens 32] [--target both|parity|vllm]

Smoke test on vLLM's server alone (starts and stops it, ~40 s):

    .venv/bin/python bench/overhead.py --target vllm --concurrency 1,4 --seconds 3
"""

from __future__ import annotations

import argparse
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
    ms,
    percentiles,
    print_table,
    rates,
    ratio,
    run_closed_loop,
    status_counts,
    timed_run,
)
from bench.targets import (  # noqa: E402
    add_server_args,
    add_target_arg,
    check_parity_keys,
    chosen_targets,
    make_parser,
    run_on,
)

TENANT = "bench"


@dataclass(frozen=True, slots=True)
class Level:
    """One concurrency level's figures over its measured window."""

    req_s: float
    tok_s: float
    ttft: dict[int, float]
    statuses: str

    @classmethod
    def of(cls, results: list[RequestResult], start: float, end: float) -> Level:
        req_s, tok_s = rates(results, start, end)
        ttft = percentiles(r.ttft_s for r in in_window(results, start, end))
        return cls(req_s, tok_s, ttft, status_counts(results))


async def measure_level(
    args: argparse.Namespace, client: Clients, endpoint: Endpoint, concurrency: int
) -> Level:
    seconds = args.warmup + args.seconds
    load = Load(args.model, args.max_tokens, stream=True, num_users=concurrency, seconds=seconds)
    start = time.monotonic()
    run = run_closed_loop(client, endpoint, load)
    results = await timed_run(f"{concurrency} streams", seconds, run)
    # The warm-up fills the engine's batch; only the steady state after it counts.
    return Level.of(results, start + args.warmup, start + seconds)


async def measure(args: argparse.Namespace, endpoints: dict[str, Endpoint]) -> dict[int, Level]:
    async with Clients(max(args.concurrency)) as client:
        return {
            c: await measure_level(args, client, endpoints[TENANT], c) for c in args.concurrency
        }


def level_row(concurrency: int, level: Level) -> list[str]:
    return [
        str(concurrency),
        f"{level.req_s:.1f}",
        f"{level.tok_s:.0f}",
        ms(level.ttft[50]),
        ms(level.ttft[99]),
        level.statuses,
    ]


def ratio_row(concurrency: int, parity: Level, vllm: Level) -> list[str]:
    return [
        str(concurrency),
        ratio(parity.req_s, vllm.req_s),
        ratio(parity.tok_s, vllm.tok_s),
        ratio(parity.ttft[50], vllm.ttft[50]),
        ratio(parity.ttft[99], vllm.ttft[99]),
    ]


def report(runs: dict[str, dict[int, Level]]) -> None:
    columns = ["concurrency", "req/s", "tok/s", "TTFT p50", "TTFT p99", "statuses"]
    for target, levels in runs.items():
        print_table(f"{target}: streams", columns, [level_row(c, lv) for c, lv in levels.items()])
    if "parity" in runs and "vllm" in runs:
        parity, vllm = runs["parity"], runs["vllm"]
        rows = [ratio_row(c, parity[c], vllm[c]) for c in parity]
        print_table("Parity / vLLM", columns[:5], rows)
        lowest = min(parity)
        gap_s = parity[lowest].ttft[50] - vllm[lowest].ttft[50]
        print(
            f"TTFT p50 difference at concurrency {lowest}: {gap_s * 1000:+.1f} ms (Parity - vLLM)"
        )


def concurrency_list(value: str) -> list[int]:
    """argparse type: "1,16,64" -> [1, 16, 64]."""
    try:
        levels = [int(part) for part in value.split(",")]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"want positive integers like 1,16,64, got {value!r}")
    return levels


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__ or "")
    add_server_args(parser, vllm_default=True)
    add_target_arg(parser)
    parser.add_argument("--key", help="API key of the Parity tenant that sends the streams")
    parser.add_argument(
        "--concurrency", type=concurrency_list, default=[1, 16, 64], help="levels, e.g. 1,16,64"
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per stream")
    args = parser.parse_args()
    args.targets = chosen_targets(args)
    check_parity_keys(parser, args.targets, {"--key": args.key})
    return args


def main() -> None:
    args = parse_args()
    measure_args = functools.partial(measure, args)
    keys = {TENANT: args.key}
    runs = {t: run_on(t, args, keys=keys, weights="", measure=measure_args) for t in args.targets}
    report(runs)


if __name__ == "__main__":
    main()
