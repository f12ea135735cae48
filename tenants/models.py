"""The control plane's domain model: plans, tenants and their weights, API keys, audit events."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from tenants.decimals import minor_unit

MAX_WEIGHT = Decimal("1000000")
MIN_WEIGHT = Decimal("0.0001")
KEY_PREFIX_TAG = "pk_live_"


def _price(verbose_name: str) -> models.DecimalField[Decimal, Decimal]:
    return models.DecimalField(
        verbose_name, max_digits=14, decimal_places=6, validators=[MinValueValidator(Decimal(0))]
    )


class Plan(models.Model):
    """Prices a tenant's usage. Every price is a Decimal per unit named in the field."""

    name = models.CharField(max_length=100, unique=True)
    price_input_per_mtok = _price("input tokens, per 1M")
    price_cached_input_per_mtok = _price("cached input tokens, per 1M")
    price_output_per_mtok = _price("output tokens, per 1M")
    price_kv_gib_hour = _price("KV cache, per GiB-hour")
    currency = models.CharField(
        max_length=3,
        default="USD",
        validators=[RegexValidator(r"^[A-Z]{3}$", "Use a three-letter ISO 4217 code, e.g. USD.")],
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TenantStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"


class Tenant(models.Model):
    """A customer sharing the GPU pool. `weight` is its fair share relative to the others."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    weight = models.DecimalField(
        max_digits=11,
        decimal_places=4,
        default=Decimal(1),
        validators=[MinValueValidator(MIN_WEIGHT), MaxValueValidator(MAX_WEIGHT)],
        help_text="Fair share relative to other tenants; must be > 0 and at most 1,000,000.",
    )
    status = models.CharField(
        max_length=16, choices=TenantStatus.choices, default=TenantStatus.ACTIVE
    )
    max_concurrent_requests = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    plan = models.ForeignKey(Plan, null=True, blank=True, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(condition=models.Q(weight__gt=0), name="tenant_weight_positive"),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_active(self) -> bool:
        return self.status == TenantStatus.ACTIVE


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created, with the one and only copy of its secret."""

    key: ApiKey
    secret: str


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def usable(self, now: datetime | None = None) -> ApiKeyQuerySet:
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).exclude(expires_at__lte=now)


class ApiKey(models.Model):
    """A tenant's credential. Only the SHA-256 of the secret is stored."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=24, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix} ({self.name})"

    @classmethod
    def issue(cls, tenant: Tenant, name: str, expires_at: datetime | None = None) -> IssuedKey:
        """Create a key; the returned secret is never stored and cannot be shown again."""
        prefix = KEY_PREFIX_TAG + secrets.token_hex(4)
        secret = f"{prefix}_{secrets.token_urlsafe(32)}"
        key = cls.objects.create(
            tenant=tenant,
            name=name,
            prefix=prefix,
            secret_hash=hash_secret(secret),
            expires_at=expires_at,
        )
        return IssuedKey(key=key, secret=secret)

    @classmethod
    def find(cls, secret: str) -> ApiKey | None:
        """The key whose secret this is, or None. Compares hashes in constant time."""
        prefix = secret[: len(KEY_PREFIX_TAG) + 8]
        key = cls.objects.select_related("tenant", "tenant__plan").filter(prefix=prefix).first()
        if key is None or not hmac.compare_digest(key.secret_hash, hash_secret(secret)):
            return None
        return key

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    def is_usable(self, now: datetime | None = None) -> bool:
        return not self.is_revoked and not self.is_expired(now)


class ActorType(models.TextChoices):
    USER = "user", "User"
    API_KEY = "api_key", "API key"
    SYSTEM = "system", "System"


class AuditAction(models.TextChoices):
    CREATE = "create", "Create"
    UPDATE = "update", "Update"
    DELETE = "delete", "Delete"
    REVOKE = "revoke", "Revoke"


class AuditEvent(models.Model):
    """Who changed what, with the object before and after. Written in the change's transaction."""

    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL)
    # A readable name kept even after the user or key is deleted.
    actor_label = models.CharField(max_length=150)
    action = models.CharField(max_length=16, choices=AuditAction.choices)
    object_type = models.CharField(max_length=32, db_index=True)
    object_id = models.CharField(max_length=64, db_index=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.object_type}:{self.object_id}"


class UsageRecordStatus(models.TextChoices):
    """How a request ended; the same values as `workers.accounting.UsageStatus`."""

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
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="usage_records")
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
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

    The histograms are mergeable log-scale counts of TTFT and latency (`tenants.histograms`),
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
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="usage_minutes")

    class Meta:
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
    """Per-hour sums, maintained by the rollup job (`tenants.rollups`) from new usage rows."""

    hour = models.DateTimeField()
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="usage_hours")

    class Meta:
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
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="usage_days")

    class Meta:
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
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")

    class Meta:
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
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")

    class Meta:
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

    def __str__(self) -> str:
        return f"{self.name} @ {self.created_at.isoformat()} #{self.record_id}"


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    FINALIZED = "finalized", "Finalized"


class Meter(models.TextChoices):
    """What an invoice line bills; each meter has one price on the plan."""

    INPUT_TOKENS = "input_tokens", "Input tokens"
    CACHED_INPUT_TOKENS = "cached_input_tokens", "Cached input tokens"
    OUTPUT_TOKENS = "output_tokens", "Output tokens"
    KV_GIB_HOURS = "kv_gib_hours", "KV cache GiB-hours"


def _money(verbose_name: str) -> models.DecimalField[Decimal, Decimal]:
    return models.DecimalField(verbose_name, max_digits=18, decimal_places=4)


class Invoice(models.Model):
    """One tenant's bill for one period [period_start, period_end), priced at its plan.

    A draft is recomputed each time it is generated; a finalised invoice never changes.
    The plan's name, prices and currency are copied onto the invoice and its lines, so a
    later price change does not rewrite history.
    """

    number = models.CharField(max_length=64, unique=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="invoices")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    status = models.CharField(
        max_length=16, choices=InvoiceStatus.choices, default=InvoiceStatus.DRAFT
    )
    plan_name = models.CharField(max_length=100, blank=True, default="")
    currency = models.CharField(max_length=3, default="USD")
    total = _money("total")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finalized_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-period_start", "tenant_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "period_start", "period_end"], name="invoice_tenant_period"
            ),
            models.CheckConstraint(
                condition=models.Q(period_end__gt=models.F("period_start")),
                name="invoice_period_not_empty",
            ),
        ]

    def __str__(self) -> str:
        return self.number

    @property
    def is_finalized(self) -> bool:
        return self.status == InvoiceStatus.FINALIZED

    @property
    def total_due(self) -> Decimal:
        """The total at the currency's minor unit (3.75, not the column's 3.7500)."""
        return self.total.quantize(minor_unit(self.currency))


class InvoiceLine(models.Model):
    """quantity x unit_price, rounded once to the currency's minor unit: `amount`."""

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    meter = models.CharField(max_length=32, choices=Meter.choices)
    description = models.CharField(max_length=200)
    # Exact: tokens are whole, GiB-hours carry the nine places of the GiB-second sums.
    quantity = models.DecimalField(max_digits=30, decimal_places=12)
    unit = models.CharField(max_length=32)
    unit_price = models.DecimalField(max_digits=20, decimal_places=10)
    amount = _money("amount")

    class Meta:
        ordering = ["invoice_id", "id"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "meter"], name="invoice_line_meter"),
        ]

    def __str__(self) -> str:
        return f"{self.invoice_id} {self.meter} {self.amount}"

    @property
    def amount_due(self) -> Decimal:
        return self.amount.quantize(minor_unit(self.invoice.currency))
