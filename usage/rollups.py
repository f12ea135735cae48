"""The rollup job: hour and day sums, and TTFT/latency histograms at every level.

Minute sums are written by the worker's sink together with the usage rows themselves (one
transaction), so they are always current. Everything else is built here, from the usage
rows the job has not read yet, in order of insertion: `(created_at, id)` after the
`RollupCursor`. Each pass takes a chunk of new rows, adds them into the hour and day rows
and into the histograms of every level with `INSERT ... ON CONFLICT DO UPDATE` (sums add;
histograms are replaced by their merge, below), and moves the cursor, all in one
transaction. A pass that fails changes nothing; two passes at once serialise on the
cursor's row lock; a row is therefore rolled up exactly once.

Histograms are merged here, in Python: the pass reads the stored histograms of the rows it
touches, adds the new counts and writes back the merged histogram together with the
percentiles read off it, so that a report reads a row's percentiles as plain columns. Only
this job writes histograms (the cursor lock makes it one writer at a time); the sink's
concurrent minute-sum upserts touch other columns of the same rows.

Besides the keyed tables (per tenant, key, model and app) the job keeps per-tenant hour and
day tables: the report "usage per tenant per hour" then reads one row per result.

Rows are read only once they are `settle_s` old, so that a sink transaction that stamped
`created_at` but had not committed yet when a pass ran is not skipped. A row that arrives
late (a worker's spill files replayed after a database outage) is still rolled up: the
cursor follows insertion, not `finished_at`, and the row lands in the hour it belongs to.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Q

from usage import histograms
from usage.bulk_sql import BulkInsert, execute_bulk, server_binding_cursor
from usage.models import (
    RollupCursor,
    TenantUsageDay,
    TenantUsageHour,
    UsageDay,
    UsageHour,
    UsageMinute,
    UsageRecord,
    UsageRecordStatus,
)
from usage.records import MINUTE_SUMS

CURSOR_NAME = "usage"
SETTLE_S = 60.0
CHUNK_ROWS = 50_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The summed columns, in the order of the upserts: the sink's own list, so the job and the
# sink add up the same things.
SUMS = MINUTE_SUMS
HISTOGRAMS = ("ttft_hist", "latency_hist")
PERCENTILES = ("ttft_p50_ms", "ttft_p95_ms", "latency_p95_ms")
RECORD_COLUMNS = (
    "id",
    "created_at",
    "finished_at",
    "tenant_id",
    "api_key_id",
    "model",
    "app",
    "status",
    "prompt_tokens",
    "cached_tokens",
    "output_tokens",
    "kv_block_seconds",
    "kv_gib_seconds",
    "preemptions",
    "queue_ms",
    "ttft_ms",
    "latency_ms",
)


@dataclass(frozen=True, slots=True)
class Level:
    """One rollup table: its model, its time column, how a timestamp truncates to it."""

    model: type[models.Model]
    time_field: str
    truncate: Callable[[datetime], datetime]
    sums: bool  # False for minutes: the sink owns their sums, the job only their histograms
    keyed: bool = True  # per (tenant, key, model, app); False: per tenant only

    @property
    def key_fields(self) -> tuple[str, ...]:
        if self.keyed:
            return (self.time_field, "tenant", "api_key_id", "model", "app")
        return (self.time_field, "tenant")


def _to_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _to_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _to_day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


MINUTE = Level(UsageMinute, "minute", _to_minute, sums=False)
HOUR = Level(UsageHour, "hour", _to_hour, sums=True)
DAY = Level(UsageDay, "day", _to_day, sums=True)
TENANT_HOUR = Level(TenantUsageHour, "hour", _to_hour, sums=True, keyed=False)
TENANT_DAY = Level(TenantUsageDay, "day", _to_day, sums=True, keyed=False)
LEVELS = (MINUTE, HOUR, DAY, TENANT_HOUR, TENANT_DAY)

# (period start, tenant, key or 0, model, app) for keyed levels; (period start, tenant) else.
RowKey = tuple[Any, ...]


def _vector(row: dict[str, Any]) -> list[Any]:
    """One usage row's contribution to every sum, in SUMS order."""
    ttft_ms = row["ttft_ms"]
    contribution = {
        "num_requests": 1,
        "num_aborted": int(row["status"] == UsageRecordStatus.ABORTED),
        "num_errors": int(row["status"] == UsageRecordStatus.ERROR),
        "num_with_ttft": int(ttft_ms is not None),
        "prompt_tokens": row["prompt_tokens"],
        "cached_tokens": row["cached_tokens"],
        "output_tokens": row["output_tokens"],
        "kv_block_seconds": row["kv_block_seconds"],
        "kv_gib_seconds": row["kv_gib_seconds"],
        "preemptions": row["preemptions"],
        "queue_ms_sum": row["queue_ms"],
        "ttft_ms_sum": ttft_ms or 0,
        "latency_ms_sum": row["latency_ms"],
    }
    return [contribution[name] for name in SUMS]


@dataclass(slots=True)
class Totals:
    sums: list[Any] = field(default_factory=lambda: [0] * len(SUMS))
    ttft: histograms.Histogram = field(default_factory=dict)
    latency: histograms.Histogram = field(default_factory=dict)

    def add(self, vector: list[Any], ttft_bucket: str | None, latency_bucket: str) -> None:
        sums = self.sums
        for i, value in enumerate(vector):
            sums[i] += value
        if ttft_bucket is not None:
            self.ttft[ttft_bucket] = self.ttft.get(ttft_bucket, 0) + 1
        self.latency[latency_bucket] = self.latency.get(latency_bucket, 0) + 1


@dataclass(frozen=True, slots=True)
class RollupReport:
    rows: int  # usage rows rolled up by this call
    passes: int
    cursor: datetime  # created_at of the last usage row rolled up, ever


def roll_up_new_usage(
    now: datetime,
    *,
    settle_s: float = SETTLE_S,
    chunk_rows: int = CHUNK_ROWS,
    using: str = "default",
    progress: Callable[[int], None] | None = None,
) -> RollupReport:
    """Roll up every usage row created at least `settle_s` before `now`, chunk by chunk."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    upto = now - timedelta(seconds=settle_s)
    total = passes = 0
    while True:
        done, cursor = _roll_up_chunk(upto, chunk_rows, using)
        passes += 1
        total += done
        if progress is not None and done:
            progress(done)
        if done < chunk_rows:
            return RollupReport(total, passes, cursor)


def _roll_up_chunk(upto: datetime, chunk_rows: int, using: str) -> tuple[int, datetime]:
    connection = connections[using]
    with transaction.atomic(using=using):
        cursor = _locked_cursor(using)
        after = Q(created_at__gt=cursor.created_at) | Q(
            created_at=cursor.created_at, id__gt=cursor.record_id
        )
        rows = list(
            UsageRecord.objects.using(using)
            .filter(after, created_at__lte=upto)
            .order_by("created_at", "id")
            .values(*RECORD_COLUMNS)[:chunk_rows]
        )
        if not rows:
            return 0, cursor.created_at
        totals = _aggregate(rows)
        for level in LEVELS:
            merged = _merge_stored(connection, level, totals[level])
            values = _level_values(connection, level, totals[level], merged)
            execute_bulk(connection, _upsert(connection, level), values)
        cursor.created_at = rows[-1]["created_at"]
        cursor.record_id = rows[-1]["id"]
        cursor.save(update_fields=["created_at", "record_id", "updated_at"])
        return len(rows), cursor.created_at


def _locked_cursor(using: str) -> RollupCursor:
    cursors = RollupCursor.objects.using(using)
    cursors.get_or_create(name=CURSOR_NAME, defaults={"created_at": EPOCH})
    return cursors.select_for_update().get(name=CURSOR_NAME)


def _aggregate(rows: list[dict[str, Any]]) -> dict[Level, dict[RowKey, Totals]]:
    totals: dict[Level, dict[RowKey, Totals]] = {level: {} for level in LEVELS}
    for row in rows:
        finished = row["finished_at"]
        rest = (row["tenant_id"], row["api_key_id"] or 0, row["model"], row["app"])
        vector = _vector(row)
        ttft = None if row["ttft_ms"] is None else str(histograms.bucket_of(row["ttft_ms"]))
        latency = str(histograms.bucket_of(row["latency_ms"]))
        for level in LEVELS:
            key = (
                (level.truncate(finished), *rest)
                if level.keyed
                else (level.truncate(finished), row["tenant_id"])
            )
            level_totals = totals[level]
            entry = level_totals.get(key)
            if entry is None:
                entry = level_totals[key] = Totals()
            entry.add(vector, ttft, latency)
    # Key order: two passes (or a pass and the sink) lock rows in the same order.
    return {level: dict(sorted(by_key.items())) for level, by_key in totals.items()}


Merged = dict[RowKey, tuple[histograms.Histogram, histograms.Histogram]]


def _merge_stored(
    connection: BaseDatabaseWrapper, level: Level, totals: dict[RowKey, Totals]
) -> Merged:
    """Each touched row's histograms: the stored ones (if the row exists) plus the new counts."""
    merged: Merged = {key: (dict(t.ttft), dict(t.latency)) for key, t in totals.items()}
    for key, ttft, latency in _stored_histograms(connection, level, list(totals)):
        mine = merged.get(key)
        if mine is not None:
            histograms.add(mine[0], ttft)
            histograms.add(mine[1], latency)
    return merged


def _stored_histograms(
    connection: BaseDatabaseWrapper, level: Level, keys: list[RowKey]
) -> Iterator[tuple[RowKey, Any, Any]]:
    if not keys:
        return
    if connection.vendor == "postgresql":
        # One query for the whole chunk: the keys travel as arrays, joined with unnest().
        yield from _stored_histograms_pg(connection, level, keys)
        return
    # Elsewhere (SQLite, the embedded mode's small volumes): one query per period.
    by_period: dict[datetime, set[int]] = {}
    for key in keys:
        by_period.setdefault(key[0], set()).add(key[1])
    rows = level.model._default_manager.using(connection.alias)
    columns = _attnames(level, [*level.key_fields, *HISTOGRAMS])
    for start, tenant_ids in by_period.items():
        found = rows.filter(**{level.time_field: start, "tenant_id__in": tenant_ids})
        for *key, ttft, latency in found.values_list(*columns):
            yield tuple(key), ttft, latency


def _field(level: Level, name: str) -> Any:
    return level.model._meta.get_field(name)


def _attnames(level: Level, names: list[str]) -> list[str]:
    return [_field(level, name).attname for name in names]


def _stored_histograms_pg(
    connection: BaseDatabaseWrapper, level: Level, keys: list[RowKey]
) -> Iterator[tuple[RowKey, Any, Any]]:
    quote = connection.ops.quote_name
    meta = level.model._meta
    fields = [_field(level, name) for name in level.key_fields]
    names = [f"k{i}" for i in range(len(fields))]
    arrays = ", ".join(f"%b::{f.db_type(connection)}[]" for f in fields)
    joined = " AND ".join(
        f"r.{quote(f.column)} = k.{n}" for f, n in zip(fields, names, strict=True)
    )
    selected = ", ".join(
        f"r.{quote(_field(level, name).column)}" for name in (*level.key_fields, *HISTOGRAMS)
    )
    sql = (
        f"SELECT {selected} FROM {quote(meta.db_table)} AS r "
        f"JOIN unnest({arrays}) AS k({', '.join(names)}) ON {joined}"
    )
    params = [list(column) for column in zip(*keys, strict=True)]
    with server_binding_cursor(connection) as cursor:
        cursor.execute(sql, params)
        for *key, ttft, latency in cursor.fetchall():
            yield tuple(key), _json(ttft), _json(latency)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _level_values(
    connection: BaseDatabaseWrapper,
    level: Level,
    totals: dict[RowKey, Totals],
    merged: Merged,
) -> list[tuple[Any, ...]]:
    adapt = connection.ops.adapt_datetimefield_value
    values = []
    for key, entry in totals.items():
        start, *rest = key
        sums = entry.sums if level.sums else _ZEROS
        ttft, latency = merged[key]
        percentiles = (*histograms.quantiles(ttft, (0.5, 0.95)), histograms.quantile(latency, 0.95))
        hists = (json.dumps(ttft), json.dumps(latency))
        values.append((adapt(start), *rest, *sums, *hists, *percentiles))
    return values


_ZEROS = [0] * len(SUMS)  # minute rows: never inserted here (the sink made them), only merged
_statements: dict[tuple[str, str], BulkInsert] = {}


def _upsert(connection: BaseDatabaseWrapper, level: Level) -> BulkInsert:
    cache_key = (connection.alias, level.model._meta.db_table)
    if cache_key not in _statements:
        _statements[cache_key] = _build_upsert(connection, level)
    return _statements[cache_key]


def _build_upsert(connection: BaseDatabaseWrapper, level: Level) -> BulkInsert:
    quote = connection.ops.quote_name
    meta = level.model._meta
    table = quote(meta.db_table)

    def column(name: str) -> str:
        return quote(_field(level, name).column)

    replaced = (*HISTOGRAMS, *PERCENTILES)
    updates = [f"{column(name)} = excluded.{column(name)}" for name in replaced]
    if level.sums:
        updates += [f"{column(s)} = {table}.{column(s)} + excluded.{column(s)}" for s in SUMS]
    conflict = ", ".join(column(k) for k in level.key_fields)
    tail = f"ON CONFLICT ({conflict}) DO UPDATE SET {', '.join(updates)}"
    return BulkInsert.of(connection, level.model, (*level.key_fields, *SUMS, *replaced), tail)


@transaction.atomic
def rebuild(using: str = "default") -> None:
    """Forget every hour/day row and every histogram; the next pass rolls up all usage again.

    For repairs (a rollup table restored from an older backup, say). Minute sums stay: the
    sink wrote them with the usage rows.
    """
    _locked_cursor(using)
    for level in LEVELS:
        if level.sums:
            level.model._default_manager.using(using).all().delete()
    UsageMinute.objects.using(using).update(
        ttft_hist=None, latency_hist=None, ttft_p50_ms=None, ttft_p95_ms=None, latency_p95_ms=None
    )
    RollupCursor.objects.using(using).filter(name=CURSOR_NAME).update(created_at=EPOCH, record_id=0)
