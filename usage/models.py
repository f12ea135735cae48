"""Usage: one row per request (`UsageRecord`, written by the workers' sinks), its rollups
per minute, hour and day, and the rows that could not be billed as they were (quarantine).

The tables were created by the `tenants` app and keep their names (`db_table`): the models
moved here with state-only migrations, so a database with rows migrates untouched.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.utils import timezone


class QuarantinedUsage(models.Model):
    """A usage row the sink could not store (it failed validation, or the database refused
    it while up). It never blocks the rows behind it; the admin shows it with its error and
    can retry it once the cause is fixed (say, a tenant restored)."""

    # sha256 of the payload: the same log line quarantined twice (a crash between the
    # quarantine and the log's cursor) is kept once.
    fingerprint = models.CharField(max_length=64, unique=True)
    request_id = models.CharField(max_length=100, blank=True, db_index=True)
    # The row as JSON with ASCII escapes: any text it holds, NUL included, is storable here.
    payload = models.TextField()
    error = models.TextField()
    source = models.CharField(max_length=200, help_text="the worker log it came from")
    created_at = models.DateTimeField(auto_now_add=True)
    retried_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        verbose_name = "quarantined usage row"
        verbose_name_plural = "quarantined usage rows"

    def __str__(self) -> str:
        return self.request_id or f"quarantined row {self.pk}"


class UsageRecordStatus(models.TextChoices):
    """How a request ended; the same values as `usage.records.UsageStatus`."""

    FINISHED = "finished", "Finished"
    ABORTED = "aborted", "Aborted"
    ERROR = "error", "Error"


def _count(verbose_name: str | None = None) -> models.PositiveBigIntegerField[int, int]:
    return models.PositiveBigIntegerField(verbose_name, default=0)


def _gib_seconds() -> models.DecimalField[Decimal, Decimal]:
    # Billing multiplies this by Decimal prices; nine places keep a one-block, one-step
    # request (about 1e-6 GiB-s) exact, and 15 integer digits outlast any tenant.
    return models.DecimalField("KV cache GiB-seconds", max_digits=24, decimal_places=9, default=0)


class UsageRecord(models.Model):
    """One request's usage, written once by the worker's usage sink (keyed by request_id).

    Durations are whole milliseconds. `app` is '' when the request named none.
    """

    request_id = models.CharField(max_length=100, unique=True)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.PROTECT, related_name="usage_records"
    )
    api_key = models.ForeignKey(
        "tenants.ApiKey",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="usage_records",
    )
    model = models.CharField(max_length=200)
    app = models.CharField(max_length=100, blank=True, default="")
    prompt_tokens = _count()
    cached_tokens = _count()
    output_tokens = _count()
    kv_block_seconds = models.FloatField(default=0.0)
    kv_gib_seconds = _gib_seconds()
    peak_blocks = models.PositiveIntegerField(default=0)
    preemptions = models.PositiveIntegerField(default=0)
    queue_ms = models.PositiveBigIntegerField(default=0)
    ttft_ms = models.PositiveBigIntegerField(null=True, blank=True)
    latency_ms = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=UsageRecordStatus.choices)
    finished_at = models.DateTimeField(db_index=True)
    # A default, not auto_now_add: the sink inserts with raw SQL and sets it itself.
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        db_table = "tenants_usagerecord"  # the table kept its name when the model moved here
        ordering = ["-finished_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "finished_at"], name="usage_tenant_finished"),
            # The rollup job reads new rows in insertion order.
            models.Index(fields=["created_at", "id"], name="usage_created"),
        ]

    def __str__(self) -> str:
        return self.request_id


class UsageSums(models.Model):
    """What every rollup row adds up over its period.

    The histograms are mergeable log-scale counts of TTFT and latency (`usage.histograms`),
    from which reports read percentiles; the rollup job fills them, never the worker's sink.
    """

    num_requests = _count()
    num_aborted = _count()
    num_errors = _count()
    # How many requests have a TTFT (errors may not), so ttft_ms_sum / num_with_ttft is a mean.
    num_with_ttft = _count()
    prompt_tokens = _count()
    cached_tokens = _count()
    output_tokens = _count()
    kv_block_seconds = models.FloatField(default=0.0)
    kv_gib_seconds = _gib_seconds()
    preemptions = _count()
    queue_ms_sum = _count()
    ttft_ms_sum = _count()
    latency_ms_sum = _count()
    ttft_hist = models.JSONField(null=True, blank=True, editable=False)
    latency_hist = models.JSONField(null=True, blank=True, editable=False)
    # Read off the histograms by the rollup job whenever it merges them, so that a report
    # whose groups are single rows reads percentiles instead of merging histograms.
    ttft_p50_ms = models.FloatField(null=True, blank=True, editable=False)
    ttft_p95_ms = models.FloatField(null=True, blank=True, editable=False)
    latency_p95_ms = models.FloatField(null=True, blank=True, editable=False)

    class Meta:
        abstract = True


class KeyedUsageSums(UsageSums):
    """Sums per (period start, tenant, key, model, app).

    `api_key_id` is a plain integer (0 = no key) and `app` is '' for none, so that the unique
    key holds no NULL: the upserts (`INSERT ... ON CONFLICT`) rely on that.
    """

    api_key_id = models.BigIntegerField(default=0)
    model = models.CharField(max_length=200)
    app = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        abstract = True


class UsageMinute(KeyedUsageSums):
    """Per-minute sums of UsageRecord, written by the worker's sink with the records themselves
    (one transaction), so minute buckets are always current."""

    minute = models.DateTimeField()
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.PROTECT, related_name="usage_minutes"
    )

    class Meta:
        db_table = "tenants_usageminute"  # the table kept its name when the model moved here
        ordering = ["-minute", "tenant_id", "api_key_id", "model", "app"]
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "tenant", "api_key_id", "model", "app"], name="usage_minute_key"
            ),
        ]
        indexes = [models.Index(fields=["tenant", "minute"], name="usage_minute_tenant")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.minute:%Y-%m-%d %H:%M} {self.model}"


class UsageHour(KeyedUsageSums):
    """Per-hour sums, maintained by the rollup job (`usage.rollups`) from new usage rows."""

    hour = models.DateTimeField()
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.PROTECT, related_name="usage_hours"
    )

    class Meta:
        db_table = "tenants_usagehour"  # the table kept its name when the model moved here
        ordering = ["-hour", "tenant_id", "api_key_id", "model", "app"]
        constraints = [
            models.UniqueConstraint(
                fields=["hour", "tenant", "api_key_id", "model", "app"], name="usage_hour_key"
            ),
        ]
        indexes = [models.Index(fields=["tenant", "hour"], name="usage_hour_tenant")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.hour:%Y-%m-%d %H}h {self.model}"


class UsageDay(KeyedUsageSums):
    """Per-day (UTC) sums, maintained by the rollup job; invoices are priced from these."""

    day = models.DateTimeField()
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.PROTECT, related_name="usage_days"
    )

    class Meta:
        db_table = "tenants_usageday"  # the table kept its name when the model moved here
        ordering = ["-day", "tenant_id", "api_key_id", "model", "app"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "tenant", "api_key_id", "model", "app"], name="usage_day_key"
            ),
        ]
        indexes = [models.Index(fields=["tenant", "day"], name="usage_day_tenant")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day:%Y-%m-%d} {self.model}"


class TenantUsageHour(UsageSums):
    """Per-hour sums per tenant (all keys, models and apps together): what the most common
    report, usage per tenant per hour, reads one row per result. Kept by the rollup job."""

    hour = models.DateTimeField()
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="+")

    class Meta:
        db_table = "tenants_tenantusagehour"  # the table kept its name when the model moved here
        ordering = ["-hour", "tenant_id"]
        constraints = [
            models.UniqueConstraint(fields=["hour", "tenant"], name="tenant_usage_hour_key"),
        ]
        indexes = [models.Index(fields=["tenant", "hour"], name="tenant_usage_hour_tenant")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.hour:%Y-%m-%d %H}h"


class TenantUsageDay(UsageSums):
    """Per-day sums per tenant, all keys, models and apps together. Kept by the rollup job."""

    day = models.DateTimeField()
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="+")

    class Meta:
        db_table = "tenants_tenantusageday"  # the table kept its name when the model moved here
        ordering = ["-day", "tenant_id"]
        constraints = [
            models.UniqueConstraint(fields=["day", "tenant"], name="tenant_usage_day_key"),
        ]
        indexes = [models.Index(fields=["tenant", "day"], name="tenant_usage_day_tenant")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day:%Y-%m-%d}"


class RollupCursor(models.Model):
    """How far the rollup job has read UsageRecord: the last (created_at, id) it rolled up.

    Moved in the same transaction as the rollup rows it accounts for, so a pass that fails
    leaves both untouched and the next pass starts from the same place.
    """

    name = models.CharField(max_length=32, unique=True)
    created_at = models.DateTimeField()
    record_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "tenants_rollupcursor"  # the table kept its name when the model moved here

    def __str__(self) -> str:
        return f"{self.name} @ {self.created_at.isoformat()} #{self.record_id}"
