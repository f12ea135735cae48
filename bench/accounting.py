"""Usage accounting: UsageSink's batched writes against one transaction per request.

Feeds N synthetic request usages (over --tenants tenants, finished over --minutes minutes)
into a started UsageSink(DatabaseUsageStore) and waits for close() to write them all; the
same events through UsageSink(MemoryUsageStore) give the no-database ceiling. Then writes N
other usages the naive way, one transaction per request (its INSERT and its rollup upsert),
through the same store and SQL. Prints record() throughput, flushes, rows
and statements per flush, flush latency, rollup rows, and the events/s ratio of the two.
Creates its own tenants (slug prefix bench-<random>-) and deletes them and their usage
after. Asserts nothing.

    DJANGO_SETTINGS_MODULE=config.settings DATABASE_URL=postgres://... \\
        .venv/bin/python bench/accounting.py [--events 50000] [--tenants 100]
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Run as a script from anywhere: make the repository root importable first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/parity")
os.environ.setdefault("SECRET_KEY", "bench-only")  # settings demand one; nothing is signed

import django  # noqa: E402

django.setup()

from django.db import connection, connections  # noqa: E402
from rich.progress import track  # noqa: E402

from tenants.models import ApiKey, Tenant  # noqa: E402
from usage.models import UsageMinute, UsageRecord  # noqa: E402
from usage.records import RequestUsage, UsageStatus  # noqa: E402
from usage.sink import DatabaseUsageStore, MemoryUsageStore, UsageSink  # noqa: E402


class MeasuredStore(DatabaseUsageStore):
    """The real store, timing each write and counting its statements in the writing thread."""

    def __init__(self) -> None:
        super().__init__()
        self.latencies_s: list[float] = []
        self.num_statements: list[int] = []

    def write(self, batch: Sequence[RequestUsage]) -> int:
        counted = [0]

        def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            counted[0] += 1
            return execute(sql, params, many, context)

        connections[self.using].ensure_connection()  # connecting is not part of a flush
        begin = time.perf_counter()
        with connections[self.using].execute_wrapper(count):
            num_new = super().write(batch)
        self.latencies_s.append(time.perf_counter() - begin)
        self.num_statements.append(counted[0])
        return num_new


def make_tenants(prefix: str, count: int) -> list[tuple[Tenant, ApiKey]]:
    tenants = Tenant.objects.bulk_create(
        Tenant(slug=f"{prefix}{i}", name=f"Bench {i}") for i in range(count)
    )
    return [(tenant, ApiKey.issue(tenant, "bench").key) for tenant in tenants]


def make_events(
    tag: str, count: int, tenants: list[tuple[Tenant, ApiKey]], minutes: int, seed: int
) -> list[RequestUsage]:
    rng = random.Random(seed)
    start = (time.time() // 60 - minutes) * 60
    statuses = [UsageStatus.FINISHED] * 18 + [UsageStatus.ABORTED, UsageStatus.ERROR]
    events = []
    for i in range(count):
        tenant, key = rng.choice(tenants)
        prompt = rng.randint(50, 2000)
        output = rng.randint(10, 1000)
        events.append(
            RequestUsage(
                request_id=f"{tag}-{i}",
                tenant=tenant.slug,
                tenant_id=tenant.pk,
                api_key_id=key.pk if rng.random() < 0.9 else None,
                model=rng.choice(["tiny-random", "llama-8b"]),
                app=rng.choice([None, "chat"]),
                prompt_tokens=prompt,
                cached_tokens=rng.randint(0, prompt // 2),
                output_tokens=output,
                kv_block_seconds=rng.uniform(0.1, 50.0),
                kv_gib_seconds=rng.uniform(0.001, 3.0),
                peak_blocks=(prompt + output) // 16 + 1,
                preemptions=int(rng.random() < 0.05),
                queue_s=rng.uniform(0.0, 2.0),
                ttft_s=rng.uniform(0.02, 1.0),
                latency_s=rng.uniform(0.5, 30.0),
                status=rng.choice(statuses),
                finished_at=start + rng.uniform(0, minutes * 60),
            )
        )
    return events


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_batched(events: list[RequestUsage], args: argparse.Namespace) -> float:
    """Record every event into a started sink, close it; events/s from first record to written."""
    store = MeasuredStore()
    with tempfile.TemporaryDirectory() as log_dir:
        sink = UsageSink(
            store,
            flush_interval_s=args.flush_interval,
            max_batch=args.max_batch,
            log_dir=log_dir,
        )
        sink.start()
        begin = time.perf_counter()
        for event in events:
            sink.record(event)
        record_s = time.perf_counter() - begin
        bytes_left = sink.close(timeout_s=600)
        total_s = time.perf_counter() - begin
    num = len(events)
    print(f"UsageSink(DatabaseUsageStore), max_batch {args.max_batch}")
    print(f"  record() in-process      {num / record_s:12,.0f} events/s")
    print(f"  recorded to all written  {num / total_s:12,.0f} events/s ({total_s:.2f} s)")
    print(f"  flushes                  {sink.num_flushes:12d}")
    print(f"  rows per flush           {num / max(1, sink.num_flushes):12.0f}")
    statements = sum(store.num_statements) / max(1, len(store.num_statements))
    print(f"  statements per flush     {statements:12.1f} (+ BEGIN and COMMIT round trips)")
    print(f"  flush latency p50        {percentile(store.latencies_s, 0.5) * 1e3:12.1f} ms")
    print(f"  flush latency p95        {percentile(store.latencies_s, 0.95) * 1e3:12.1f} ms")
    print(f"  rollup rows upserted     {store.num_rollup_rows:12d}")
    print(f"  rows written / bytes left {sink.num_rows_written:12d} / {bytes_left}")
    return num / total_s


def run_in_memory(events: list[RequestUsage], args: argparse.Namespace) -> float:
    """The same sink over MemoryUsageStore: the ceiling with no database at all."""
    with tempfile.TemporaryDirectory() as log_dir:
        sink = UsageSink(
            MemoryUsageStore(),
            flush_interval_s=args.flush_interval,
            max_batch=args.max_batch,
            log_dir=log_dir,
        )
        sink.start()
        begin = time.perf_counter()
        for event in events:
            sink.record(event)
        sink.close(timeout_s=600)
        elapsed = time.perf_counter() - begin
    print("UsageSink(MemoryUsageStore), no database: the ceiling")
    print(f"  recorded to all written  {len(events) / elapsed:12,.0f} events/s ({elapsed:.2f} s)")
    return len(events) / elapsed


def run_naive(events: list[RequestUsage]) -> float:
    """One transaction per request: the same store and SQL, batches of one."""
    store = MeasuredStore()
    show = sys.stdout.isatty()
    begin = time.perf_counter()
    for event in track(events, description="naive writes", transient=True, disable=not show):
        store.write([event])
    elapsed = time.perf_counter() - begin
    statements = sum(store.num_statements) / max(1, len(store.num_statements))
    print("Naive: one transaction per request (INSERT + rollup upsert)")
    print(f"  written                  {len(events) / elapsed:12,.0f} events/s ({elapsed:.2f} s)")
    print(f"  statements per request   {statements:12.1f} (+ BEGIN and COMMIT round trips)")
    p50, p95 = (percentile(store.latencies_s, q) * 1e3 for q in (0.5, 0.95))
    print(f"  latency p50 / p95        {p50:12.2f} / {p95:.2f} ms per request")
    return len(events) / elapsed


def clean_up(prefix: str) -> None:
    tenants = Tenant.objects.filter(slug__startswith=prefix)
    UsageRecord.objects.filter(tenant__in=tenants).delete()
    UsageMinute.objects.filter(tenant__in=tenants).delete()
    tenants.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--minutes", type=int, default=5, help="finished_at spread")
    parser.add_argument("--max-batch", type=int, default=2000)
    parser.add_argument("--flush-interval", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if UsageRecord._meta.db_table not in connection.introspection.table_names():
        sys.exit(f"{connection.settings_dict['NAME']}: no usage tables; run manage.py migrate")
    prefix = f"bench-{secrets.token_hex(4)}-"
    try:
        tenants = make_tenants(prefix, args.tenants)
        batched = make_events(f"{prefix}b", args.events, tenants, args.minutes, args.seed)
        naive = make_events(f"{prefix}n", args.events, tenants, args.minutes, args.seed)
        print(
            f"{args.events} events, {args.tenants} tenants, {args.minutes} minutes, "
            f"{connection.vendor} database {connection.settings_dict['NAME']}"
        )
        memory_rate = run_in_memory(batched, args)
        batched_rate = run_batched(batched, args)
        naive_rate = run_naive(naive)
        print("Ratios (events/s, recorded to written)")
        print(f"  batched / naive          {batched_rate / naive_rate:12.1f}x")
        print(f"  batched / in-memory      {batched_rate / memory_rate:12.3f}x")
    finally:
        clean_up(prefix)


if __name__ == "__main__":
    main()
