"""The staff dashboard's pages, through Django's test client: who may see them, and the
changes they make (weights, keys), which go through the audited services."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from billing.models import Invoice, InvoiceLine
from tenants.models import ApiKey, AuditEvent, Tenant
from tests.tenants.factories import make_key, make_tenant

pytestmark = pytest.mark.django_db

PAGES = [
    "/dashboard/",
    "/dashboard/tenants/",
    "/dashboard/tenants/acme/",
    "/dashboard/usage/",
    "/dashboard/invoices/",
    "/dashboard/what-if/",
]


@pytest.fixture
def browser(staff_user: Any) -> Client:
    """A staff user's signed-in browser session (the pages use session auth)."""
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def charlie(db: None) -> Client:
    """Signed in, but not staff."""
    client = Client()
    client.force_login(get_user_model().objects.create_user("charlie", password="pw"))
    return client


def make_invoice(tenant: Tenant, **overrides: Any) -> Invoice:
    fields: dict[str, Any] = {
        "number": f"INV-{tenant.slug}-{Invoice.objects.count() + 1:04d}",
        "period_start": datetime(2026, 3, 1, tzinfo=UTC),
        "period_end": datetime(2026, 4, 1, tzinfo=UTC),
        "plan_name": "Standard",
        "currency": "USD",
        "total": Decimal("12.3400"),
        **overrides,
    }
    return Invoice.objects.create(tenant=tenant, **fields)


def make_line(invoice: Invoice, **overrides: Any) -> InvoiceLine:
    fields: dict[str, Any] = {
        "meter": "output_tokens",
        "description": "Output tokens",
        "quantity": Decimal("2000000"),
        "unit": "1M tokens",
        "unit_price": Decimal("1.5"),
        "amount": Decimal("3.0000"),
        **overrides,
    }
    return InvoiceLine.objects.create(invoice=invoice, **fields)


def page_text(response: Any) -> str:
    return response.content.decode()


# -- who may see the pages ----------------------------------------------------------------


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_visitors_are_sent_to_the_sign_in_page(client, acme, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")
    assert parse_qs(urlsplit(response["Location"]).query)["next"] == [url]


@pytest.mark.parametrize("url", PAGES)
def test_signed_in_non_staff_get_403(charlie, acme, url):
    assert charlie.get(url).status_code == 403


@pytest.mark.parametrize("url", PAGES)
def test_every_page_renders_for_staff_with_the_navigation(browser, acme, url):
    response = browser.get(url)
    assert response.status_code == 200
    html = page_text(response)
    for link in ("/dashboard/usage/", "/dashboard/invoices/", "/dashboard/what-if/", "/api/docs/"):
        assert f'href="{link}"' in html
    assert "/static/parity/dashboard.css" in html


def test_the_charts_library_is_served_by_the_project_not_a_cdn(browser, client):
    html = page_text(browser.get("/dashboard/"))
    assert "/static/vendor/chartjs/chart.umd.min.js" in html
    assert "cdn" not in html.lower()
    assert client.get("/static/vendor/chartjs/chart.umd.min.js").status_code == 200


def test_the_home_page_links_to_the_dashboard(client):
    assert 'href="/dashboard/"' in page_text(client.get("/"))


def test_an_unknown_tenant_is_a_404(browser):
    assert browser.get("/dashboard/tenants/nobody/").status_code == 404


# -- weights -----------------------------------------------------------------------------


def test_changing_the_weight_is_audited_and_shown_on_the_tenant_page(browser, acme, staff_user):
    response = browser.post("/dashboard/tenants/acme/weight/", {"weight": "3.5"}, follow=True)
    assert response.status_code == 200
    acme.refresh_from_db()
    assert acme.weight == Decimal("3.5")
    event = AuditEvent.objects.get(object_type="tenant", object_id=str(acme.pk), action="update")
    assert event.actor_user == staff_user
    assert (event.before["weight"], event.after["weight"]) == ("1.0000", "3.5000")
    html = page_text(response)
    assert "acme&#x27;s weight is now 3.5." in html
    assert "1.0000 → 3.5000" in html


@pytest.mark.parametrize(
    ("weight", "message"),
    [
        ("0", "must be greater than 0"),
        ("-2", "must be greater than 0"),
        ("heavy", "Enter a number"),
        ("NaN", "Enter a number"),
        ("1000001", "less than or equal to 1000000"),
        ("", "This field is required"),
    ],
)
def test_a_bad_weight_shows_a_form_error_and_changes_nothing(browser, acme, weight, message):
    response = browser.post("/dashboard/tenants/acme/weight/", {"weight": weight})
    assert response.status_code == 200
    assert message in page_text(response)
    acme.refresh_from_db()
    assert acme.weight == Decimal(1)
    assert not AuditEvent.objects.filter(object_type="tenant").exists()


def test_the_weight_form_only_accepts_post(browser, acme):
    assert browser.get("/dashboard/tenants/acme/weight/").status_code == 405


def test_a_post_without_the_csrf_token_is_refused(staff_user, acme):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(staff_user)
    assert strict.post("/dashboard/tenants/acme/weight/", {"weight": "2"}).status_code == 403
    acme.refresh_from_db()
    assert acme.weight == Decimal(1)


# -- API keys ----------------------------------------------------------------------------


def test_a_new_keys_secret_is_shown_once_on_the_response_page(browser, acme):
    response = browser.post("/dashboard/tenants/acme/keys/", {"name": "production"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    key = ApiKey.objects.get(tenant=acme, name="production")
    secret = response.context["issued"].secret
    assert secret in page_text(response)
    assert ApiKey.find(secret) == key
    assert AuditEvent.objects.filter(object_type="apikey", object_id=str(key.pk)).exists()
    later = page_text(browser.get("/dashboard/tenants/acme/"))
    assert key.prefix in later
    assert secret not in later


def test_a_key_needs_a_name(browser, acme):
    response = browser.post("/dashboard/tenants/acme/keys/", {"name": ""})
    assert "This field is required" in page_text(response)
    assert not ApiKey.objects.filter(tenant=acme).exists()


def test_revoking_a_key_stops_it_and_says_so(browser, acme):
    issued = make_key(acme, "old")
    url = f"/dashboard/tenants/acme/keys/{issued.key.pk}/revoke/"
    response = browser.post(url, follow=True)
    issued.key.refresh_from_db()
    assert issued.key.is_revoked
    assert ApiKey.find(issued.secret).is_usable() is False
    assert "is revoked" in page_text(response)
    assert "already revoked" in page_text(browser.post(url, follow=True))


def test_a_key_cannot_be_revoked_through_another_tenants_page(browser, acme, globex):
    issued = make_key(globex, "theirs")
    response = browser.post(f"/dashboard/tenants/acme/keys/{issued.key.pk}/revoke/")
    assert response.status_code == 404
    issued.key.refresh_from_db()
    assert not issued.key.is_revoked


# -- usage explorer ---------------------------------------------------------------------


def test_the_usage_explorer_builds_one_query_for_the_chart_and_the_csv(browser, acme, globex):
    response = browser.get(
        "/dashboard/usage/",
        {
            "start": "2026-03-01T00:00",
            "end": "2026-03-02T00:00",
            "bucket_width": "1h",
            "group_by": ["tenant", "model"],
            "tenants": ["acme"],
            "models": "llama, parity-tiny",
        },
    )
    query = response.context["api_query"]
    assert parse_qs(query) == {
        "start_time": ["1772323200"],
        "end_time": ["1772409600"],
        "bucket_width": ["1h"],
        "group_by": ["tenant,model"],
        "tenants": ["acme"],
        "models": ["llama,parity-tiny"],
    }
    html = page_text(response)
    assert f'href="/api/v1/exports/usage.csv?{query.replace("&", "&amp;")}"' in html
    assert f'data-url="/api/v1/usage/?{query.replace("&", "&amp;")}&amp;limit=168"' in html


def test_a_first_visit_shows_the_last_day_by_tenant(browser, acme):
    query = parse_qs(browser.get("/dashboard/usage/").context["api_query"])
    assert query["bucket_width"] == ["1h"]
    assert query["group_by"] == ["tenant"]
    assert int(query["end_time"][0]) - int(query["start_time"][0]) == 24 * 3600


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": "2026-03-02T00:00", "end": "2026-03-01T00:00"}, "The end must be after"),
        ({"start": "2026-01-01T00:00", "end": "2026-03-01T00:00", "bucket_width": "1m"}, "buckets"),
        ({"start": "yesterday", "end": "2026-03-01T00:00"}, "Enter a valid date/time"),
        ({"tenants": ["nobody"]}, "Select a valid choice"),
    ],
)
def test_bad_usage_filters_show_an_error_and_no_download(browser, acme, params, message):
    response = browser.get("/dashboard/usage/", {"bucket_width": "1h", **params})
    assert response.status_code == 200
    assert message in page_text(response)
    assert "usage.csv" not in page_text(response)


# -- invoices ----------------------------------------------------------------------------


def test_the_invoice_list_filters_by_tenant_status_and_period(browser, acme, globex):
    march = make_invoice(acme)
    make_invoice(acme, period_start=datetime(2026, 2, 1, tzinfo=UTC), number="INV-feb")
    make_invoice(globex, status="finalized", number="INV-globex")
    by_tenant = browser.get("/dashboard/invoices/", {"tenant": "acme", "period": "2026-03"})
    assert [i.number for i in by_tenant.context["page"]] == [march.number]
    finalized = browser.get("/dashboard/invoices/", {"status": "finalized"})
    assert [i.number for i in finalized.context["page"]] == ["INV-globex"]


def test_an_invoice_shows_its_lines_and_total(browser, acme):
    invoice = make_invoice(acme, total=Decimal("3.2500"))
    make_line(invoice)
    make_line(
        invoice,
        meter="kv_gib_hours",
        description="KV cache",
        quantity=Decimal("2.5"),
        unit="GiB-hour",
        unit_price=Decimal("0.1"),
        amount=Decimal("0.2500"),
    )
    html = page_text(browser.get(f"/dashboard/invoices/{invoice.pk}/"))
    assert "KV cache GiB-hours" in html
    assert "2000000" in html and "2.5" in html and "0.1" in html
    assert 'id="invoice-total">3.25<' in html  # at the currency's minor unit
    assert "USD" in html and "Draft" in html


def test_the_tenant_page_links_its_invoices(browser, acme):
    invoice = make_invoice(acme)
    assert f'href="/dashboard/invoices/{invoice.pk}/"' in page_text(
        browser.get("/dashboard/tenants/acme/")
    )


# -- what-if ------------------------------------------------------------------------------


def test_the_whatif_form_is_prefilled_with_current_weights_and_policies(browser, acme, globex):
    make_tenant("initech", weight=Decimal("0.25"))
    html = page_text(browser.get("/dashboard/what-if/"))
    assert 'name="weight-globex" data-tenant="globex" value="2"' in html
    assert 'name="weight-initech" data-tenant="initech" value="0.25"' in html
    assert '<option value="vtc" selected>vtc</option>' in html
    assert 'name="csrfmiddlewaretoken"' in html
