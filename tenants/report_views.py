"""The usage report, invoices and billing exports. Staff see every tenant; a tenant key sees
only its own, and naming any other tenant is answered like naming none that exists (404)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import django_filters
from django.db.models import QuerySet
from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.views import APIView

from billing import exports
from billing import invoices as billing
from billing.models import Invoice, InvoiceStatus
from tenants.permissions import IsStaffOrTenantKey, principal_of
from tenants.serializers import InvoiceSerializer, UsagePageSerializer
from tenants.views import visible_tenants
from usage import report as usage_report

SLUG = re.compile(r"[-a-zA-Z0-9_]+")


def tenant_ids(request: Request, slugs: list[str]) -> list[int] | None:
    """The tenants a report covers: the ones named (each must be visible to the caller), all
    of the caller's when none is named (None = every tenant, staff only)."""
    principal = principal_of(request)
    if bad := [slug for slug in slugs if not SLUG.fullmatch(slug)]:
        raise NotFound(f"No tenant named {bad[0]!r}.")  # not a slug: no tenant has it
    found = dict(visible_tenants(request).filter(slug__in=slugs).values_list("slug", "id"))
    if missing := [slug for slug in slugs if slug not in found]:
        raise NotFound(f"No tenant named {missing[0]!r}.")
    if slugs:
        return list(found.values())
    return [principal.tenant.pk] if principal is not None else None


def usage_query(request: Request, *, paged: bool = True) -> usage_report.UsageQuery:
    params = request.query_params
    allowed = usage_report.PARAMS if paged else usage_report.PARAMS - {"page", "limit"}
    try:
        query = usage_report.parse_query(
            params,
            now=int(timezone.now().timestamp()),
            tenant_ids=tenant_ids(request, usage_report.listed(params, "tenants")),
            allowed_params=allowed,
        )
        if not paged:
            query.check_exportable()
        return query
    except usage_report.QueryError as error:
        raise ValidationError(error.errors) from None


USAGE_PARAMETERS = [
    OpenApiParameter("start_time", int, required=True, description="Unix seconds (inclusive)."),
    OpenApiParameter("end_time", int, description="Unix seconds (exclusive); default now."),
    OpenApiParameter("bucket_width", str, enum=list(usage_report.WIDTHS), default="1d"),
    OpenApiParameter(
        "group_by", str, description="Comma-separated: " + ", ".join(usage_report.GROUPS)
    ),
    OpenApiParameter("tenants", str, description="Comma-separated tenant slugs."),
    OpenApiParameter("models", str, description="Comma-separated model names."),
    OpenApiParameter("apps", str, description="Comma-separated application ids."),
    OpenApiParameter("api_key_ids", str, description="Comma-separated API key ids."),
]
PAGE_PARAMETERS = [
    OpenApiParameter("limit", int, description="Buckets per page (1m: 1440, 1h: 168, 1d: 31)."),
    OpenApiParameter("page", str, description="The next_page cursor of the previous page."),
]


class UsageView(APIView):
    """Usage per time bucket and group, from the rollup tables (OpenAI Usage API shape)."""

    permission_classes = [IsStaffOrTenantKey]

    @extend_schema(parameters=USAGE_PARAMETERS + PAGE_PARAMETERS, responses=UsagePageSerializer)
    def get(self, request: Request) -> HttpResponse:
        # Rendered as JSON text by the report itself: the page can be large (see rendered_page).
        body = usage_report.rendered_page(usage_query(request))
        return HttpResponse(body, content_type="application/json")


class InvoiceFilter(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug")
    period = django_filters.CharFilter(method="filter_period", label="YYYY-MM or a day range")
    status = django_filters.ChoiceFilter(choices=InvoiceStatus.choices)

    class Meta:
        model = Invoice
        fields = ["tenant", "status", "period"]

    def filter_period(
        self, queryset: QuerySet[Invoice], name: str, value: str
    ) -> QuerySet[Invoice]:
        try:
            period = billing.parse_period(value)
        except billing.BillingError as error:
            raise ValidationError({"period": [str(error)]}) from None
        return queryset.filter(period_start__gte=period.start, period_end__lte=period.end)


class InvoiceViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = InvoiceSerializer
    permission_classes = [IsStaffOrTenantKey]
    filterset_class = InvoiceFilter

    def get_queryset(self) -> QuerySet[Invoice]:
        return (
            Invoice.objects.filter(tenant__in=visible_tenants(self.request))
            .select_related("tenant")
            .prefetch_related("lines")
        )


def _stream(chunks: Iterator[str], content_type: str, filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(chunks, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


CSV = "text/csv; charset=utf-8"
JSONL = "application/x-ndjson; charset=utf-8"


class UsageExportView(APIView):
    """The usage report over its whole range, one row per (bucket, group), streamed."""

    permission_classes = [IsStaffOrTenantKey]
    fmt = "csv"

    @extend_schema(parameters=USAGE_PARAMETERS, responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request: Request) -> StreamingHttpResponse:
        query = usage_query(request, paged=False)
        rows = exports.usage_rows(query)
        if self.fmt == "jsonl":
            return _stream(exports.as_jsonl(rows), JSONL, "usage.jsonl")
        return _stream(exports.as_csv(exports.USAGE_COLUMNS, rows), CSV, "usage.csv")


class InvoiceExportView(APIView):
    """Every visible invoice's lines, one row each, streamed (filters: tenant, status, period)."""

    permission_classes = [IsStaffOrTenantKey]
    fmt = "csv"

    @extend_schema(
        parameters=[
            OpenApiParameter("tenant", str),
            OpenApiParameter("status", str, enum=[c.value for c in InvoiceStatus]),
            OpenApiParameter("period", str, description="YYYY-MM or YYYY-MM-DD..YYYY-MM-DD"),
        ],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        invoices = Invoice.objects.filter(tenant__in=visible_tenants(request))
        filtered = InvoiceFilter(request.query_params, queryset=invoices, request=request)
        if not filtered.is_valid():
            raise ValidationError(filtered.errors)
        chosen = filtered.qs.select_related("tenant").prefetch_related("lines").order_by("id")
        rows = exports.invoice_rows(chosen.iterator(chunk_size=500))
        if self.fmt == "jsonl":
            return _stream(exports.as_jsonl(rows), JSONL, "invoices.jsonl")
        return _stream(exports.as_csv(exports.INVOICE_COLUMNS, rows), CSV, "invoices.csv")


class FocusExportView(APIView):
    """A FOCUS 1.2-style cost and usage CSV: one row per tenant, UTC day, model and meter."""

    permission_classes = [IsStaffOrTenantKey]

    @extend_schema(
        parameters=USAGE_PARAMETERS[:2] + [USAGE_PARAMETERS[4]],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        allowed = frozenset({"start_time", "end_time", "tenants", "format"})
        named = usage_report.listed(request.query_params, "tenants")
        try:
            query = usage_report.parse_query(
                {**request.query_params.dict(), "bucket_width": "1d"},
                now=int(timezone.now().timestamp()),
                tenant_ids=tenant_ids(request, named),
                allowed_params=allowed | {"bucket_width"},
            )
        except usage_report.QueryError as error:
            raise ValidationError(error.errors) from None
        start = datetime.fromtimestamp(query.start, UTC)
        end = datetime.fromtimestamp(query.end, UTC)
        ids = None if query.tenant_ids is None else list(query.tenant_ids)
        rows = exports.focus_rows(start, end, ids)
        return _stream(exports.as_csv(exports.FOCUS_COLUMNS, rows), CSV, "focus.csv")
