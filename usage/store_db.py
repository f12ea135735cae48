"""The usage sink's database store: each batch in one transaction, with raw-SQL upserts.

`INSERT ... ON CONFLICT (request_id) DO NOTHING RETURNING request_id` stores the new rows
and names them; only those enter the per-minute rollups, which are upserted with
`ON CONFLICT (...) DO UPDATE SET x = x + excluded.x`. A batch retried after a commit whose
answer was lost therefore changes nothing. The same SQL runs on PostgreSQL and on SQLite
(3.35 or later: RETURNING and upserts), so the embedded mode takes the same path.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connections,
    transaction,
)
from django.db.backends.base.base import BaseDatabaseWrapper

from usage.bulk_sql import BulkInsert, execute_bulk

if TYPE_CHECKING:
    from usage.sink import Quarantined
from usage.records import (
    MINUTE_SUMS,
    MinuteKey,
    MinuteTotals,
    RequestUsage,
    dedupe,
    gib_seconds,
    roll_up,
    to_ms,
)

logger = logging.getLogger(__name__)

RECORD_FIELDS = (
    "request_id",
    "tenant",
    "api_key",
    "model",
    "app",
    "prompt_tokens",
    "cached_tokens",
    "output_tokens",
    "kv_block_seconds",
    "kv_gib_seconds",
    "peak_blocks",
    "preemptions",
    "queue_ms",
    "ttft_ms",
    "latency_ms",
    "status",
    "finished_at",
    "created_at",
)
MINUTE_KEY_FIELDS = ("minute", "tenant", "api_key_id", "model", "app")

Adapt = Callable[[datetime], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Statements:
    """The store's two statements: new records (naming those inserted), rollup upserts."""

    insert_records: BulkInsert
    upsert_minutes: BulkInsert

    @classmethod
    def build(cls, connection: BaseDatabaseWrapper) -> Statements:
        from usage.models import UsageMinute, UsageRecord

        def column(model: Any, name: str) -> str:
            return connection.ops.quote_name(model._meta.get_field(name).column)

        request_id = column(UsageRecord, "request_id")
        minutes = connection.ops.quote_name(UsageMinute._meta.db_table)
        keys = ", ".join(column(UsageMinute, name) for name in MINUTE_KEY_FIELDS)
        sums = ", ".join(
            f"{c} = {minutes}.{c} + excluded.{c}"
            for c in (column(UsageMinute, name) for name in MINUTE_SUMS)
        )
        return cls(
            BulkInsert.of(
                connection,
                UsageRecord,
                RECORD_FIELDS,
                f"ON CONFLICT ({request_id}) DO NOTHING RETURNING {request_id}",
            ),
            BulkInsert.of(
                connection,
                UsageMinute,
                MINUTE_KEY_FIELDS + MINUTE_SUMS,
                f"ON CONFLICT ({keys}) DO UPDATE SET {sums}",
            ),
        )


def record_values(usage: RequestUsage, adapt: Adapt, created_at: Any) -> tuple[Any, ...]:
    """One usage row in RECORD_FIELDS order, in the columns' units."""
    return (
        usage.request_id,
        usage.tenant_id,
        usage.api_key_id,
        usage.model,
        usage.app or "",
        usage.prompt_tokens,
        usage.cached_tokens,
        usage.output_tokens,
        usage.kv_block_seconds,
        gib_seconds(usage.kv_gib_seconds),
        usage.peak_blocks,
        usage.preemptions,
        to_ms(usage.queue_s),
        None if usage.ttft_s is None else to_ms(usage.ttft_s),
        to_ms(usage.latency_s),
        usage.status.value,
        adapt(datetime.fromtimestamp(usage.finished_at, UTC)),
        created_at,
    )


def minute_values(key: MinuteKey, totals: MinuteTotals, adapt: Adapt) -> tuple[Any, ...]:
    """One rollup row in MINUTE_KEY_FIELDS + MINUTE_SUMS order."""
    minute = adapt(datetime.fromtimestamp(key.minute, UTC))
    sums = (getattr(totals, name) for name in MINUTE_SUMS)
    return (minute, key.tenant_id, key.api_key_id, key.model, key.app, *sums)


def database_now(connection: BaseDatabaseWrapper) -> datetime:
    """The database's clock, not this worker's: the rollup job follows `created_at` and must
    not miss a row because the worker that wrote it has a clock behind the others'."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT CURRENT_TIMESTAMP")
        (value,) = cursor.fetchone()
    if isinstance(value, str):  # SQLite: 'YYYY-MM-DD HH:MM:SS', in UTC
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class UnknownTenant(ValueError):
    """A usage row names a tenant the database no longer has."""


class DatabaseUsageStore:
    """Writes usage through Django's connection `using`, from whichever thread calls it.

    One batch, one transaction, two statements: the record INSERT and the rollup upsert,
    each split only past `max_rows_per_statement` rows (on SQLite, past its 999-parameter
    limit). Rollups go in key order, so two workers upserting the same minutes lock them in
    the same order and cannot deadlock. The connection is the calling thread's own and
    stays open between writes; any database error closes it, so a write after a server
    restart or a dropped socket starts on a fresh one.

    A row of a tenant deleted meanwhile is refused (`UnknownTenant`): the sink quarantines
    it. A row whose key was deleted is stored without the key.
    """

    def __init__(self, using: str = "default", *, max_rows_per_statement: int = 5000) -> None:
        if max_rows_per_statement < 1:
            raise ValueError("max_rows_per_statement must be >= 1")
        self.using = using
        self.max_rows_per_statement = max_rows_per_statement
        self.num_rollup_rows = 0  # rollup rows upserted by committed writes
        self._statements: Statements | None = None

    def write(self, batch: Sequence[RequestUsage]) -> int:
        rows = dedupe(batch)
        try:
            try:
                return self._write_rows(rows)
            except IntegrityError:
                # A foreign key that no longer resolves (checked at commit: Django's foreign
                # keys are deferred). Repair and retry, so one row cannot wedge the sink.
                return self._write_rows(self._without_dangling_keys(rows))
        except DatabaseError:
            self._drop_connection()
            raise

    def quarantine(self, items: Sequence[Quarantined]) -> int:
        from usage.models import QuarantinedUsage

        rows = [
            QuarantinedUsage(
                fingerprint=item.fingerprint,
                request_id=item.request_id[:100],
                payload=item.payload,
                error=item.error,
                source=item.source[:200],
            )
            for item in items
        ]
        try:
            with transaction.atomic(using=self.using):
                fingerprints = [row.fingerprint for row in rows]
                known = set(
                    QuarantinedUsage.objects.using(self.using)
                    .filter(fingerprint__in=fingerprints)
                    .values_list("fingerprint", flat=True)
                )
                fresh = [row for row in rows if row.fingerprint not in known]
                QuarantinedUsage.objects.using(self.using).bulk_create(fresh, ignore_conflicts=True)
                return len(fresh)
        except DatabaseError:
            self._drop_connection()
            raise

    def is_outage(self, error: BaseException) -> bool:
        # The server or the socket, not the rows: the same rows will go in once it is back.
        return isinstance(error, OperationalError | InterfaceError)

    def release(self) -> None:
        self._drop_connection()

    def _write_rows(self, rows: list[RequestUsage]) -> int:
        if not rows:
            return 0
        connection = connections[self.using]
        if self._statements is None:
            self._statements = Statements.build(connection)
        sql = self._statements
        adapt = connection.ops.adapt_datetimefield_value
        with transaction.atomic(using=self.using):
            created_at = adapt(database_now(connection))
            records = [record_values(row, adapt, created_at) for row in rows]
            returned = execute_bulk(
                connection, sql.insert_records, records, self.max_rows_per_statement
            )
            inserted = {request_id for (request_id,) in returned}
            fresh = [row for row in rows if row.request_id in inserted]
            minutes = [minute_values(k, t, adapt) for k, t in roll_up(fresh).items()]
            execute_bulk(connection, sql.upsert_minutes, minutes, self.max_rows_per_statement)
        self.num_rollup_rows += len(minutes)
        return len(inserted)

    def _without_dangling_keys(self, rows: list[RequestUsage]) -> list[RequestUsage]:
        """The rows with keys deleted meanwhile set to None (as SET_NULL would have);
        raises `UnknownTenant` for a row whose tenant is gone: the sink then writes the
        batch row by row and quarantines that one, where a person can see it."""
        from tenants.models import ApiKey, Tenant

        tenants = set(
            Tenant.objects.using(self.using)
            .filter(id__in={row.tenant_id for row in rows})
            .values_list("id", flat=True)
        )
        for row in rows:
            if row.tenant_id not in tenants:
                raise UnknownTenant(
                    f"tenant {row.tenant_id} ({row.tenant!r}) no longer exists: its usage "
                    "cannot be stored until the tenant is restored"
                )
        keys = set(
            ApiKey.objects.using(self.using)
            .filter(id__in={row.api_key_id for row in rows if row.api_key_id is not None})
            .values_list("id", flat=True)
        )
        return [
            row
            if row.api_key_id is None or row.api_key_id in keys
            else dataclasses.replace(row, api_key_id=None)
            for row in rows
        ]

    def _drop_connection(self) -> None:
        # A failed or finished thread's connection is closed, so the next write reconnects
        # instead of reusing a broken socket. Never inside someone's transaction (tests).
        connection = connections[self.using]
        if not connection.in_atomic_block:
            connection.close()
