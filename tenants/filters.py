"""Query-string filters for the API's lists (django-filter)."""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet
from django.utils import timezone

from tenants.models import ApiKey, AuditEvent, Tenant


class TenantFilter(django_filters.FilterSet):
    class Meta:
        model = Tenant
        fields = ["status", "plan"]


class ApiKeyFilter(django_filters.FilterSet):
    active = django_filters.BooleanFilter(method="filter_active", label="Usable now")

    class Meta:
        model = ApiKey
        fields = ["active"]

    def filter_active(self, queryset: QuerySet[ApiKey], name: str, value: bool) -> QuerySet[ApiKey]:
        usable = ApiKey.objects.usable(timezone.now()).values("pk")
        return queryset.filter(pk__in=usable) if value else queryset.exclude(pk__in=usable)


class AuditEventFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(field_name="actor_label")
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["object_type", "object_id", "actor_type", "actor", "action", "since", "until"]
