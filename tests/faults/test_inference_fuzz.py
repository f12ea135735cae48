"""Property: whatever a tenant sends to the inference API (`/v1/*`, as the OpenAPI schema
describes it, and much it does not), the answer is a JSON 2xx or 4xx naming what to fix,
never a 5xx. The pool has no worker here, so a request that passes every check gets the
documented 503 `no_engine`, the one 5xx allowed: it is the request's only way past the
parser. (The REST API's fuzz: `tests/tenants/test_api_fuzz.py`.)"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings

# The schema as the API serves it; the requests go over HTTP to the live ASGI server (the
# WSGI app would run the async views off their event loop).
schema = schemathesis.openapi.from_dict(
    SchemaGenerator().get_schema(request=None, public=True)
).include(path_regex="^/v1/")

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def empty_pool(settings: Any) -> None:
    # A pool no worker ever served: the gate refuses at once instead of queueing.
    settings.PARITY_ENGINE_QUEUE = f"fuzz-{uuid.uuid4().hex}"


@pytest.fixture
def quiet_request_log() -> Iterator[None]:
    logger = logging.getLogger("gateway")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@schema.parametrize()
@FUZZ
def test_tenant_requests_to_the_inference_api_never_get_a_server_error(
    case: Any, api: Any, light: Any, empty_pool: None, quiet_request_log: None
) -> None:
    response = case.call(base_url=api.url, headers={"Authorization": f"Bearer {light[1].secret}"})
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), response.text[:200]
    body = response.json()
    if response.status_code >= 500:
        assert (response.status_code, body["error"]["code"]) == (503, "no_engine"), body
    elif response.status_code >= 400:
        assert body["error"]["message"], body
    if response.status_code == 400 and body["error"]["code"] != "invalid_json":
        assert body["error"]["param"] is not None, body  # names the field to fix
