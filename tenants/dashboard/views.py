"""The staff pages. Thin: forms check input, `tenants.services` makes (and audits) changes,
and the charts fetch their data from the REST API in the browser."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from billing.models import Invoice
from scheduler_core.registry import POLICY_NAMES
from tenants import services
from tenants.audit import Actor
from tenants.dashboard.forms import (
    InvoiceFilterForm,
    KeyForm,
    UsageQueryForm,
    WeightForm,
    WhatIfForm,
)
from tenants.dashboard.live import DEFAULT_WINDOW_S, WINDOWS_S
from tenants.decimals import plain
from tenants.models import ApiKey, AuditEvent, Tenant

View = Callable[..., HttpResponse]
NUM_AUDIT_EVENTS = 20
INVOICES_PER_PAGE = 50
USAGE_RANGES = [("1h", "Last hour"), ("24h", "Last 24 hours"), ("7d", "Last 7 days")]


def staff_required(view: View) -> View:
    """Anonymous visitors go to the sign-in page; signed-in non-staff get 403."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not request.user.is_staff:
            raise PermissionDenied("Staff only.")
        return view(request, *args, **kwargs)

    return wrapper


# -- overview -----------------------------------------------------------------------------


@require_GET
@staff_required
def overview(request: HttpRequest) -> HttpResponse:
    windows = [(w, f"{w // 60} min") for w in WINDOWS_S]
    return render(
        request,
        "dashboard/overview.html",
        {"nav": "overview", "windows": windows, "default_window": DEFAULT_WINDOW_S},
    )


# -- tenants ------------------------------------------------------------------------------


@require_GET
@staff_required
def tenant_list(request: HttpRequest) -> HttpResponse:
    usable = Q(api_keys__revoked_at__isnull=True)
    tenants = Tenant.objects.select_related("plan").annotate(
        num_keys=Count("api_keys", filter=usable)
    )
    rows = [(tenant, plain(tenant.weight)) for tenant in tenants]
    return render(request, "dashboard/tenant_list.html", {"nav": "tenants", "rows": rows})


@require_GET
@staff_required
def tenant_detail(request: HttpRequest, slug: str) -> HttpResponse:
    tenant = get_object_or_404(Tenant, slug=slug)
    return render_tenant(request, tenant)


def render_tenant(
    request: HttpRequest,
    tenant: Tenant,
    weight_form: WeightForm | None = None,
    key_form: KeyForm | None = None,
) -> HttpResponse:
    context = {
        "nav": "tenants",
        "tenant": tenant,
        "weight": plain(tenant.weight),
        "weight_form": weight_form or WeightForm(initial={"weight": plain(tenant.weight)}),
        "key_form": key_form or KeyForm(),
        "keys": tenant.api_keys.all(),
        "audit_events": [(event, audit_changes(event)) for event in tenant_audit(tenant)],
        "invoices": Invoice.objects.filter(tenant=tenant)[:24],
        "usage_ranges": USAGE_RANGES,
    }
    return render(request, "dashboard/tenant_detail.html", context)


def tenant_audit(tenant: Tenant) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.filter(object_type="tenant", object_id=str(tenant.pk))
    return events[:NUM_AUDIT_EVENTS]


def audit_changes(event: AuditEvent) -> list[tuple[str, Any, Any]]:
    """The fields an event changed, as (field, before, after); the update stamp is noise."""
    before, after = event.before or {}, event.after or {}
    names = [n for n in {**before, **after} if n not in ("updated_at", "created_at")]
    return [(n, before.get(n), after.get(n)) for n in names if before.get(n) != after.get(n)]


@require_POST
@staff_required
def tenant_weight(request: HttpRequest, slug: str) -> HttpResponse:
    tenant = get_object_or_404(Tenant, slug=slug)
    form = WeightForm(request.POST)
    if form.is_valid():
        try:
            services.update(Actor.for_user(request.user), tenant, form.cleaned_data)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(
                request,
                f"{tenant.slug}'s weight is now {plain(form.cleaned_data['weight'])}.",
            )
            return redirect("dashboard:tenant", slug=tenant.slug)
    return render_tenant(request, tenant, weight_form=form)


@never_cache
@require_POST
@staff_required
def key_create(request: HttpRequest, slug: str) -> HttpResponse:
    tenant = get_object_or_404(Tenant, slug=slug)
    form = KeyForm(request.POST)
    if not form.is_valid():
        return render_tenant(request, tenant, key_form=form)
    issued = services.issue_key(Actor.for_user(request.user), tenant, form.cleaned_data["name"])
    # Rendered, not redirected to: the secret exists only in this response.
    context = {"nav": "tenants", "tenant": tenant, "issued": issued}
    return render(request, "dashboard/key_created.html", context)


@require_POST
@staff_required
def key_revoke(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    key = get_object_or_404(ApiKey, pk=pk, tenant__slug=slug)
    if services.revoke_key(Actor.for_user(request.user), key):
        messages.success(request, f"Key {key.prefix} ({key.name}) is revoked.")
    else:
        messages.info(request, f"Key {key.prefix} was already revoked.")
    return redirect("dashboard:tenant", slug=slug)


# -- usage, invoices, what-if ----------------------------------------------------------------


@require_GET
@staff_required
def usage(request: HttpRequest) -> HttpResponse:
    form = UsageQueryForm.from_query(request.GET)
    valid = form.is_valid()
    context = {
        "nav": "usage",
        "form": form,
        "api_query": form.api_query() if valid else None,  # the CSV export's, too
        "chart_query": form.chart_query() if valid else None,
    }
    return render(request, "dashboard/usage.html", context)


@require_GET
@staff_required
def invoice_list(request: HttpRequest) -> HttpResponse:
    form = InvoiceFilterForm(request.GET)
    invoices = Invoice.objects.select_related("tenant")
    if form.is_valid():
        invoices = filter_invoices(invoices, form.cleaned_data)
    page = Paginator(invoices, INVOICES_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"nav": "invoices", "form": form, "page": page, "query": query.urlencode()}
    return render(request, "dashboard/invoice_list.html", context)


def filter_invoices(invoices: QuerySet[Invoice], filters: dict[str, Any]) -> QuerySet[Invoice]:
    if filters.get("period"):
        period = filters["period"]
        invoices = invoices.filter(period_start__year=period.year, period_start__month=period.month)
    if filters.get("tenant"):
        invoices = invoices.filter(tenant=filters["tenant"])
    if filters.get("status"):
        invoices = invoices.filter(status=filters["status"])
    return invoices


@require_GET
@staff_required
def invoice_detail(request: HttpRequest, pk: int) -> HttpResponse:
    invoice = get_object_or_404(Invoice.objects.select_related("tenant"), pk=pk)
    lines = [(line, plain(line.quantity), plain(line.unit_price)) for line in invoice.lines.all()]
    context = {"nav": "invoices", "invoice": invoice, "lines": lines}
    return render(request, "dashboard/invoice_detail.html", context)


@require_GET
@staff_required
def whatif(request: HttpRequest) -> HttpResponse:
    tenants = [(t, plain(t.weight)) for t in Tenant.objects.all()]
    context = {
        "nav": "whatif",
        "form": WhatIfForm(),
        "tenants": tenants,
        "policies": POLICY_NAMES,
    }
    return render(request, "dashboard/whatif.html", context)
