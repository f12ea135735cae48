"""/dashboard/ routes: the staff pages."""

from django.urls import path

from tenants.dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("tenants/", views.tenant_list, name="tenants"),
    path("tenants/<slug:slug>/", views.tenant_detail, name="tenant"),
    path("tenants/<slug:slug>/weight/", views.tenant_weight, name="tenant-weight"),
    path("tenants/<slug:slug>/keys/", views.key_create, name="key-create"),
    path("tenants/<slug:slug>/keys/<int:pk>/revoke/", views.key_revoke, name="key-revoke"),
    path("usage/", views.usage, name="usage"),
    path("invoices/", views.invoice_list, name="invoices"),
    path("invoices/<int:pk>/", views.invoice_detail, name="invoice"),
    path("what-if/", views.whatif, name="whatif"),
]
