"""API representations. Writes go through `tenants.services`, so they are atomic and audited."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.db import models
from django.utils import timezone
from rest_framework import serializers

from billing.models import Invoice, InvoiceLine
from tenants import services
from tenants.models import MAX_WEIGHT, ApiKey, AuditEvent, Plan, Tenant
from tenants.permissions import actor_of


class StrictSerializer(serializers.ModelSerializer):
    """Rejects fields it does not know, or may not write, instead of ignoring them: a client
    that misspells `wieght` must hear about it, not believe the change was made."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError(
                    {name: ["Unknown or read-only field."] for name in unknown}
                )
        return super().to_internal_value(data)

    def create(self, validated_data: dict[str, Any]) -> Any:
        model: type[models.Model] = self.Meta.model
        obj = model(**validated_data)
        return services.create(actor_of(self.context["request"]), obj)

    def update(self, instance: Any, validated_data: dict[str, Any]) -> Any:
        return services.update(actor_of(self.context["request"]), instance, validated_data)


class PlanSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Plan
        fields = ["id", "name", "currency"]


class PlanSerializer(StrictSerializer):
    class Meta:
        model = Plan
        fields = [
            "id",
            "name",
            "price_input_per_mtok",
            "price_cached_input_per_mtok",
            "price_output_per_mtok",
            "price_kv_gib_hour",
            "currency",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]


class TenantSerializer(StrictSerializer):
    # Wider than the column so that an absurd weight gets the clear message below,
    # not a complaint about digit counts.
    weight = serializers.DecimalField(
        max_digits=30, decimal_places=4, required=False, default=Decimal(1)
    )
    plan = serializers.PrimaryKeyRelatedField(
        queryset=Plan.objects.all(), required=False, allow_null=True
    )

    class Meta:
        model = Tenant
        fields = [
            "slug",
            "name",
            "weight",
            "status",
            "max_concurrent_requests",
            "plan",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        if self.instance is not None:
            # The slug is the tenant's id in workers and usage rows: it never changes.
            fields["slug"].read_only = True
        if self.partial:
            fields["weight"].default = serializers.empty
        return fields

    def validate_weight(self, value: Decimal) -> Decimal:
        if value <= 0:
            raise serializers.ValidationError("Weight must be greater than 0.")
        if value > MAX_WEIGHT:
            raise serializers.ValidationError(f"Weight must be at most {MAX_WEIGHT}.")
        return value


class ApiKeySerializer(StrictSerializer):
    tenant: serializers.SlugRelatedField[Tenant] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )
    is_active = serializers.SerializerMethodField()

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "tenant",
            "name",
            "prefix",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "is_active",
        ]
        read_only_fields = ["id", "prefix", "created_at", "revoked_at", "last_used_at"]

    def get_is_active(self, key: ApiKey) -> bool:
        return key.is_usable()

    def validate_expires_at(self, value: Any) -> Any:
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("expires_at must be in the future.")
        return value


class IssuedKeySerializer(ApiKeySerializer):
    """The response to creating a key: the only place the secret ever appears."""

    secret = serializers.CharField(read_only=True)

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "secret"]


class MeSerializer(serializers.ModelSerializer):
    plan = PlanSummarySerializer(read_only=True)

    class Meta:
        model = Tenant
        fields = ["slug", "name", "weight", "status", "max_concurrent_requests", "plan"]


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "actor_type",
            "actor_label",
            "action",
            "object_type",
            "object_id",
            "before",
            "after",
        ]


class InvoiceLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = InvoiceLine
        fields = ["meter", "description", "quantity", "unit", "unit_price", "amount"]

    def to_representation(self, instance: Any) -> Any:
        body = super().to_representation(instance)
        body["amount"] = str(instance.amount_due)  # at the currency's minor unit: "3.75"
        return body


class InvoiceSerializer(serializers.ModelSerializer):
    tenant: serializers.SlugRelatedField[Tenant] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )
    lines = InvoiceLineSerializer(many=True, read_only=True)

    class Meta:
        model = Invoice
        fields = [
            "id",
            "number",
            "tenant",
            "period_start",
            "period_end",
            "status",
            "plan_name",
            "currency",
            "total",
            "lines",
            "created_at",
            "updated_at",
            "finalized_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance: Any) -> Any:
        body = super().to_representation(instance)
        body["total"] = str(instance.total_due)  # at the currency's minor unit: "3.75"
        return body


# The usage report's shape, for the OpenAPI schema (the view builds plain dicts for speed).


class UsageResultSerializer(serializers.Serializer):
    object = serializers.CharField(default="usage.result")
    tenant = serializers.CharField(allow_null=True)
    api_key_id = serializers.IntegerField(allow_null=True)
    model = serializers.CharField(allow_null=True)
    app = serializers.CharField(allow_null=True)
    num_requests = serializers.IntegerField()
    num_aborted = serializers.IntegerField()
    num_errors = serializers.IntegerField()
    input_tokens = serializers.IntegerField(help_text="Prompt tokens, cached ones included.")
    input_cached_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    kv_block_seconds = serializers.FloatField()
    kv_gib_seconds = serializers.DecimalField(max_digits=24, decimal_places=9)
    ttft_p50_ms = serializers.FloatField(allow_null=True)
    ttft_p95_ms = serializers.FloatField(allow_null=True)
    latency_p95_ms = serializers.FloatField(allow_null=True)
    preemptions = serializers.IntegerField()


class UsageBucketSerializer(serializers.Serializer):
    object = serializers.CharField(default="bucket")
    start_time = serializers.IntegerField()
    end_time = serializers.IntegerField()
    results = UsageResultSerializer(many=True)


class UsagePageSerializer(serializers.Serializer):
    def get_fields(self) -> dict[str, serializers.Field]:
        # Declared here, not as attributes: a field named `data` would hide Serializer.data.
        return {
            "object": serializers.CharField(default="page"),
            "data": UsageBucketSerializer(many=True),
            "has_more": serializers.BooleanField(),
            "next_page": serializers.CharField(allow_null=True),
        }
