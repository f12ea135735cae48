"""Top-level URL map: admin, the staff dashboard, the REST API, its schema and docs, the
inference API."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from tenants.dashboard.api import LiveView

urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    path("admin/", admin.site.urls),
    path("dashboard/", include("tenants.dashboard.urls")),
    # Before the API's include, whose router would otherwise answer /api/v1/live/ with 404.
    path("api/v1/live/", LiveView.as_view(), name="live"),
    path("api/v1/", include("tenants.urls")),
    path("v1/", include("gateway.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

handler400 = "tenants.errors.bad_request"
handler404 = "tenants.errors.not_found"
handler500 = "tenants.errors.server_error"
