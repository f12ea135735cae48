"""The gateway's ASGI handler: a request is a coroutine and nothing else. Django's own
handler gives each request a thread for its sync code; under a flood of 1,200
connections that was 800 threads and two thread hops per request."""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from typing import Any

import httpx
import pytest
from django.test import Client

from config.asgi import application
from tenants.models import IssuedKey

NUM_REQUESTS = 40


class ThreadStarts:
    """Counts the threads started while it is installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = threading.Thread.start

        def start(thread: threading.Thread) -> None:
            self.count += 1
            original(thread)

        monkeypatch.setattr(threading.Thread, "start", start)


async def get_models_concurrently(key: IssuedKey, n: int) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=application)
    headers = {"Authorization": f"Bearer {key.secret}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        return list(
            await asyncio.gather(*(client.get("/v1/models", headers=headers) for _ in range(n)))
        )


def test_concurrent_gateway_requests_start_no_thread(
    alice_key: IssuedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first request loads the key (one query, on Django's sync thread); the rest hit
    # the cache and must need no thread at all.
    assert (
        Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {alice_key.secret}").status_code
        == 200
    )
    starts = ThreadStarts(monkeypatch)

    responses = asyncio.run(get_models_concurrently(alice_key, NUM_REQUESTS))

    assert [r.status_code for r in responses] == [200] * NUM_REQUESTS
    assert starts.count == 0


def test_a_refused_request_through_the_gateway_is_json(alice_key: IssuedKey) -> None:
    async def call() -> Any:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.get("/v1/models", headers={"Authorization": "Bearer nope"})

    response = asyncio.run(call())

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_client_told_to_wait_keeps_its_connection_past_uvicorns_default_keep_alive(
    api: Any,
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    statuses = []
    for pause_s in (0.0, 6.0):  # uvicorn's default closes a connection idle for 5 s
        time.sleep(pause_s)
        connection.request("GET", "/v1/models", headers={"Authorization": "Bearer pk_live_x.y"})
        response = connection.getresponse()
        response.read()
        statuses.append(response.status)
        local_port = connection.sock.getsockname()[1]
        if pause_s == 0.0:
            first_port = local_port

    assert statuses == [401, 401]
    assert local_port == first_port  # the same connection, not a new one
    connection.close()
