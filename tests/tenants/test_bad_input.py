"""Bad input to the REST API always gets a JSON 4xx naming the cause: never a 500, never an
HTML page."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

NESTED = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "query",
    [
        "start_time=%C2%B2",  # '²': str.isdigit() says yes, int() says no
        "start_time=%D9%A3",  # an Arabic-Indic three
        "start_time=" + "9" * 5000,  # past int()'s 4,300 digits
        "start_time=0&limit=%C2%B9",
        "start_time=0&api_key_ids=1,%C2%B2",
    ],
)
def test_a_usage_parameter_that_is_not_an_ascii_number_is_a_400_naming_it(
    alice: APIClient, query: str
) -> None:
    response = alice.get(f"/api/v1/usage/?{query}")

    assert response.status_code == 400
    name = query.rsplit("&", 1)[-1].split("=")[0]
    assert name in response.json()


@pytest.mark.parametrize(
    "body", [NESTED, '{"name": "k", "expires_at": ' + "9" * 5000 + "}", "{not json"]
)
def test_a_body_the_json_parser_cannot_read_is_a_400(alice: APIClient, body: str) -> None:
    response = alice.post("/api/v1/tenants/acme/keys/", body, content_type="application/json")

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_a_body_over_the_size_limit_is_a_413_in_json(alice: APIClient) -> None:
    body = '{"name": "' + "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10) + '"}'

    response = alice.post("/api/v1/tenants/acme/keys/", body, content_type="application/json")

    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert "limit" in response.json()["detail"]


def test_the_wrong_content_type_is_a_415_in_json(alice: APIClient) -> None:
    response = alice.post(
        "/api/v1/tenants/acme/keys/", "name=k", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 415
    assert "application/x-www-form-urlencoded" in response.json()["detail"]


def test_a_whatif_time_in_non_ascii_digits_is_a_400(staff: Any) -> None:
    response = staff.post(
        "/api/v1/whatif/",
        {"start_time": "\u00b2", "end_time": "3600", "policy": "vtc"},
        format="json",
    )

    assert response.status_code == 400
    assert "start_time" in response.json()
