"""/api/v1/ routes."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from tenants import views

router = DefaultRouter()
router.register("tenants", views.TenantViewSet, basename="tenant")
router.register("plans", views.PlanViewSet, basename="plan")
router.register("audit", views.AuditEventViewSet, basename="audit")

keys = views.ApiKeyViewSet.as_view({"get": "list", "post": "create"})
key = views.ApiKeyViewSet.as_view({"get": "retrieve", "delete": "destroy"})

urlpatterns = [
    path("me/", views.MeView.as_view(), name="me"),
    path("tenants/<slug:tenant_slug>/keys/", keys, name="tenant-keys"),
    path("tenants/<slug:tenant_slug>/keys/<int:pk>/", key, name="tenant-key"),
    *router.urls,
]
