"""The usage report at scale: rollup tables against a report computed from the raw rows.

Loads --rows usage rows (default 1,000,000) for --tenants tenants (default 1,000) over --days
days (default 30) into a PostgreSQL database of its own, through the worker's real database
store (usage rows and minute sums, one transaction per 10,000-row batch), then runs the
rollup job over them. Tenant activity is Zipf-distributed (a few heavy tenants, a long tail)
with a daily cycle; each tenant has one to three keys, two models and a few applications.

Then times, through the whole Django + DRF stack (a staff session, `GET /api/v1/usage/`):
  - the 30-day, 1h-bucket, group_by=tenant report: its first page (24 buckets, the default),
    a 168-bucket page, and every page of the 30 days in turn;
  - the baseline: the same first page computed from the raw usage rows with one GROUP BY
    (what the report would cost without rollups), in the same run, on the same data.
Prints p50/p95 over --repeat runs and the baseline/rollup ratio. Asserts nothing.

    .venv/bin/python bench/usage_report.py [--rows 1000000] [--tenants 1000] [--days 30]
        [--database-url postgres://postgres@127.0.0.1:5432/parity_bench] [--reuse] [--drop]

--reuse keeps rows already loaded by an earlier run with the same --rows/--tenants/--days;
--drop deletes the bench database at the end.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/parity_bench"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per report")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--reuse", action="store_true", help="keep an earlier run's rows")
    parser.add_argument("--drop", action="store_true", help="drop the bench database after")
    args = parser.parse_args()
    for name in ("rows", "tenants", "days", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if urlparse(args.database_url).scheme not in ("postgres", "postgresql"):
        parser.error("--database-url must be a postgres:// URL: the goal is PostgreSQL's")
    return args


def ensure_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.path.lstrip("/")}" WITH (FORCE)')


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only")  # settings demand one; nothing is signed
    os.environ["ALLOWED_HOSTS"] = "testserver,127.0.0.1,localhost"
    os.environ.pop("REDIS_URL", None)  # the report needs no cache
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# -- data -------------------------------------------------------------------------------------


def signature(args: argparse.Namespace) -> str:
    return f"bench:{args.rows}:{args.tenants}:{args.days}:{args.seed}"


def already_loaded(args: argparse.Namespace) -> bool:
    from usage.models import RollupCursor, UsageRecord

    marker = RollupCursor.objects.filter(name="bench").first()
    return bool(
        marker
        and marker.record_id == args.rows
        and UsageRecord.objects.count() == args.rows
        and RollupCursor.objects.filter(name="usage", record_id__gt=0).exists()
        and _stored_signature() == signature(args)
    )


def _stored_signature() -> str:
    from tenants.models import Plan

    plan = Plan.objects.filter(name__startswith="bench:").first()
    return plan.name if plan else ""


def wipe() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE tenants_usagerecord, tenants_usageminute, tenants_usagehour, "
            "tenants_usageday, tenants_rollupcursor, tenants_invoiceline, tenants_invoice, "
            "tenants_apikey, tenants_auditevent, tenants_tenant, tenants_plan CASCADE"
        )


def make_tenants(args: argparse.Namespace) -> list[tuple[int, list[int]]]:
    from decimal import Decimal

    from tenants.models import ApiKey, Plan, Tenant

    plan = Plan.objects.create(
        name=signature(args),
        price_input_per_mtok=Decimal("0.5"),
        price_cached_input_per_mtok=Decimal("0.25"),
        price_output_per_mtok=Decimal("1.5"),
        price_kv_gib_hour=Decimal("0.1"),
    )
    tenants = Tenant.objects.bulk_create(
        Tenant(slug=f"t{i:04d}", name=f"Tenant {i}", plan=plan) for i in range(args.tenants)
    )
    rng = random.Random(args.seed)
    keys = ApiKey.objects.bulk_create(
        ApiKey(tenant=t, name=f"k{j}", prefix=f"bench{t.pk}_{j}", secret_hash=f"{t.pk}:{j}")
        for t in tenants
        for j in range(rng.randint(1, 3))
    )
    by_tenant: dict[int, list[int]] = {}
    for key in keys:
        by_tenant.setdefault(key.tenant_id, []).append(key.pk)
    return [(t.pk, by_tenant[t.pk]) for t in tenants]


def zipf_weights(count: int, s: float = 1.1) -> list[float]:
    return [1.0 / (rank + 1) ** s for rank in range(count)]


def load(args: argparse.Namespace, end: datetime) -> float:
    from rich.progress import Progress

    from usage.records import RequestUsage, UsageStatus
    from usage.sink import DatabaseUsageStore

    tenants = make_tenants(args)
    rng = random.Random(args.seed)
    weights = zipf_weights(len(tenants))
    span_s = args.days * 86400.0
    start = end.timestamp() - span_s
    models = ("llama-3-8b", "qwen-2.5-7b")
    store = DatabaseUsageStore()
    batch_size = 10_000
    begin = time.perf_counter()
    with Progress() as progress:
        task = progress.add_task("loading usage rows", total=args.rows)
        for first in range(0, args.rows, batch_size):
            picks = rng.choices(tenants, weights=weights, k=min(batch_size, args.rows - first))
            batch = []
            for i, (tenant_id, keys) in enumerate(picks):
                # A daily cycle: more traffic in the (UTC) afternoon than at night.
                t = start + rng.random() * span_s
                while rng.random() > 0.6 + 0.4 * math.sin(2 * math.pi * (t % 86400) / 86400):
                    t = start + rng.random() * span_s
                prompt = int(rng.lognormvariate(6.0, 1.0)) + 1
                ttft = rng.lognormvariate(-2.0, 0.8)
                batch.append(
                    RequestUsage(
                        request_id=f"b{first + i}",
                        tenant=str(tenant_id),
                        tenant_id=tenant_id,
                        api_key_id=rng.choice(keys),
                        model=models[tenant_id % 7 == 0 and rng.random() < 0.5],
                        app=rng.choice((None, None, "chat", "agent")),
                        prompt_tokens=prompt,
                        cached_tokens=rng.randint(0, prompt // 2),
                        output_tokens=int(rng.lognormvariate(5.0, 0.9)) + 1,
                        kv_block_seconds=rng.random() * 50,
                        kv_gib_seconds=rng.random() * 0.5,
                        peak_blocks=rng.randint(1, 64),
                        preemptions=int(rng.random() < 0.02),
                        queue_s=rng.random() * 0.5,
                        ttft_s=ttft,
                        latency_s=ttft + rng.lognormvariate(1.0, 0.7),
                        status=UsageStatus.FINISHED,
                        finished_at=t,
                    )
                )
            store.write(batch)
            progress.advance(task, len(batch))
    return time.perf_counter() - begin


def roll_up_all(args: argparse.Namespace) -> float:
    from django.utils import timezone
    from rich.progress import Progress

    from usage.models import RollupCursor
    from usage.rollups import roll_up_new_usage

    begin = time.perf_counter()
    with Progress() as progress:
        task = progress.add_task("rolling up", total=args.rows)
        roll_up_new_usage(timezone.now(), settle_s=0, progress=lambda n: progress.advance(task, n))
    elapsed = time.perf_counter() - begin
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # fresh planner statistics, as autovacuum would give soon
    RollupCursor.objects.update_or_create(
        name="bench", defaults={"created_at": timezone.now(), "record_id": args.rows}
    )
    return elapsed


# -- timing -------------------------------------------------------------------------------------


def staff_client() -> Any:
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(
        username="bench-staff", defaults={"is_staff": True}
    )
    client = Client()
    client.force_login(user)
    return client


def timed(fn: Any, repeat: int) -> tuple[list[float], Any]:
    fn()  # one warm-up run: caches, the planner, Python's imports
    samples, result = [], None
    for _ in range(repeat):
        begin = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - begin) * 1000)
    return samples, result


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def raw_report(start: datetime, end: datetime) -> list[tuple[Any, ...]]:
    """The first page from the raw rows: one GROUP BY over (hour, tenant), with percentiles."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT date_trunc('hour', finished_at) AS hour, tenant_id, COUNT(*),
                   SUM(prompt_tokens), SUM(cached_tokens), SUM(output_tokens),
                   SUM(kv_block_seconds), SUM(kv_gib_seconds), SUM(preemptions),
                   percentile_disc(0.5) WITHIN GROUP (ORDER BY ttft_ms),
                   percentile_disc(0.95) WITHIN GROUP (ORDER BY ttft_ms),
                   percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms)
            FROM tenants_usagerecord
            WHERE finished_at >= %s AND finished_at < %s
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            [start, end],
        )
        return cursor.fetchall()


def main() -> int:
    args = parse_args()
    ensure_database(args.database_url)
    setup_django(args.database_url)
    from usage.models import UsageDay, UsageHour, UsageRecord

    end = datetime(2026, 11, 1, tzinfo=UTC)
    start = end - timedelta(days=args.days)
    if args.reuse and already_loaded(args):
        print(f"reusing {args.rows:,} loaded rows")
        load_s = rollup_s = float("nan")
    else:
        wipe()
        load_s = load(args, end)
        rollup_s = roll_up_all(args)
    client = staff_client()
    base = {"start_time": int(start.timestamp()), "end_time": int(end.timestamp())}
    query = {**base, "bucket_width": "1h", "group_by": "tenant"}

    def first_page() -> Any:
        response = client.get("/api/v1/usage/", query)
        assert response.status_code == 200, response.content[:300]
        return response

    def week_page() -> Any:
        return client.get("/api/v1/usage/", {**query, "limit": 168})

    def all_pages() -> int:
        params: dict[str, Any] = {**query, "limit": 168}
        pages = 0
        while True:
            body = client.get("/api/v1/usage/", params).json()
            pages += 1
            if not body["has_more"]:
                return pages
            params["page"] = body["next_page"]

    first_ms, response = timed(first_page, args.repeat)
    body = response.json()
    results = sum(len(b["results"]) for b in body["data"])
    week_ms, _ = timed(week_page, max(3, args.repeat // 3))
    all_ms, pages = timed(all_pages, max(3, args.repeat // 6))
    page_end = start + timedelta(hours=24)
    raw_ms, raw_rows = timed(lambda: raw_report(start, page_end), max(3, args.repeat // 3))

    def line(label: str, value: str) -> None:
        print(f"{label:<34}{value}")

    def percentiles(samples: list[float]) -> str:
        return f"p50 {p(samples, 0.5):8.1f} ms   p95 {p(samples, 0.95):8.1f} ms"

    print()
    line("usage rows", f"{UsageRecord.objects.count():>12,}")
    line("tenants", f"{args.tenants:>12,}")
    line("days", f"{args.days:>12}")
    line("hour rollup rows (keyed)", f"{UsageHour.objects.count():>12,}")
    line("day rollup rows (keyed)", f"{UsageDay.objects.count():>12,}")
    line("load through the sink store", f"{load_s:>12.1f} s  ({args.rows / load_s:,.0f} rows/s)")
    line("rollup job", f"{rollup_s:>12.1f} s  ({args.rows / rollup_s:,.0f} rows/s)")
    line("first page: buckets / results", f"{len(body['data']):>6} / {results:,}")
    line("report, first page (24 x 1h)", percentiles(first_ms))
    line("report, 168 x 1h page", percentiles(week_ms))
    line(f"report, all {pages} pages ({args.days} d)", percentiles(all_ms))
    line("baseline: raw rows, first page", f"{percentiles(raw_ms)}  (SQL only)")
    line("raw rows / rollups, first page", f"{p(raw_ms, 0.5) / p(first_ms, 0.5):>12.1f}x (p50)")
    met = "met" if p(first_ms, 0.95) <= 100 else "NOT met"
    line("goal: first page p95 <= 100 ms", f"{met:>12}")
    if args.drop:
        from django.db import connections

        connections.close_all()
        drop_database(args.database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
