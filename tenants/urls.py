"""/api/v1/ routes."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from tenants import report_views, views
from tenants.report_views import FocusExportView, InvoiceExportView, UsageExportView
from tenants.whatif_api import WhatIfView

router = DefaultRouter()
router.register("tenants", views.TenantViewSet, basename="tenant")
router.register("plans", views.PlanViewSet, basename="plan")
router.register("audit", views.AuditEventViewSet, basename="audit")
router.register("invoices", report_views.InvoiceViewSet, basename="invoice")

keys = views.ApiKeyViewSet.as_view({"get": "list", "post": "create"})
key = views.ApiKeyViewSet.as_view({"get": "retrieve", "delete": "destroy"})

urlpatterns = [
    path("me/", views.MeView.as_view(), name="me"),
    path("usage/", report_views.UsageView.as_view(), name="usage"),
    path("exports/usage.csv", UsageExportView.as_view(fmt="csv"), name="export-usage-csv"),
    path("exports/usage.jsonl", UsageExportView.as_view(fmt="jsonl"), name="export-usage-jsonl"),
    path("exports/focus.csv", FocusExportView.as_view(), name="export-focus"),
    path("exports/invoices.csv", InvoiceExportView.as_view(fmt="csv"), name="export-invoices-csv"),
    path(
        "exports/invoices.jsonl",
        InvoiceExportView.as_view(fmt="jsonl"),
        name="export-invoices-jsonl",
    ),
    path("whatif/", WhatIfView.as_view(), name="whatif"),
    path("tenants/<slug:tenant_slug>/keys/", keys, name="tenant-keys"),
    path("tenants/<slug:tenant_slug>/keys/<int:pk>/", key, name="tenant-key"),
    *router.urls,
]
