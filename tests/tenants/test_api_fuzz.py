"""Property: whatever a client sends that the schema allows (and much it does not), the API
answers with a 2xx or a 4xx, never a 5xx. Schemathesis generates the requests from our own
OpenAPI schema, as staff and as a tenant key."""

from __future__ import annotations

import base64
import logging

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from config.wsgi import application

# The inference API (/v1) has a fuzz of its own, against the live ASGI server:
# tests/faults/test_inference_fuzz.py.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application).exclude(
    path_regex="^/v1/"
)

FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def in_test_transaction():
    # As Django's own test client does: keep the test's connection (and its transaction)
    # open across requests instead of closing it when each response finishes.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture
def quiet_request_log():
    # Thousands of deliberate 4xx answers would each log a warning line.
    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.fixture
def credentials(in_test_transaction, quiet_request_log, staff_user, alice_key, bob_key):
    basic = base64.b64encode(b"admin:admin-password").decode()
    return {"staff": f"Basic {basic}", "alice": f"Bearer {alice_key.secret}"}


@pytest.mark.django_db
@schema.parametrize()
@FUZZ
def test_staff_requests_never_get_a_server_error(case, credentials):
    response = case.call(headers={"Authorization": credentials["staff"]})
    case.validate_response(response, checks=[not_a_server_error])


@pytest.mark.django_db
@schema.parametrize()
@FUZZ
def test_tenant_key_requests_never_get_a_server_error(case, credentials):
    response = case.call(headers={"Authorization": credentials["alice"]})
    case.validate_response(response, checks=[not_a_server_error])
