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
