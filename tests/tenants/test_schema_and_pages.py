"""OpenAPI schema, locally served docs, and the pages `make run` promises."""

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_the_openapi_schema_validates_without_warnings():
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_the_schema_describes_the_api(anonymous):
    response = anonymous.get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/tenants/{slug}/" in schema["paths"]
    assert "/api/v1/tenants/{tenant_slug}/keys/" in schema["paths"]
    assert schema["components"]["securitySchemes"]["tenantApiKey"]["scheme"] == "bearer"


def test_the_docs_use_no_cdn(anonymous):
    response = anonymous.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page
    assert "cdn" not in page.lower()
    assert "/static/drf_spectacular_sidecar/" in page


def test_the_home_page_and_admin_login_are_served(anonymous):
    assert anonymous.get("/").status_code == 200
    assert anonymous.get("/admin/login/").status_code == 200


def test_an_unknown_api_path_is_a_json_404(anonymous):
    response = anonymous.get("/api/v1/nothing-here/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
