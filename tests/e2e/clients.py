"""Small HTTP clients for the end-to-end tests: SSE parsing, floods from many threads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

# One client for every thread: a new httpx.Client per request builds an SSL context each
# time, which costs more CPU than the request itself and starves the live server.
_client = httpx.Client(
    timeout=600, limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
)


@dataclass(slots=True)
class StreamResult:
    status: int
    request_id: str = ""
    text: str = ""
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    num_chunks: int = 0
    error: dict[str, Any] | None = None
    body: dict[str, Any] = field(default_factory=dict)


def chat_body(content: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": "parity-tiny",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        **extra,
    }


def stream_chat(
    base_url: str,
    key: str,
    content: str,
    max_tokens: int,
    on_accepted: Callable[[], None] | None = None,
) -> StreamResult:
    """One streaming chat; `on_accepted` runs at the first chunk, which the API sends only
    once a worker has taken the request."""
    body = chat_body(
        content, max_tokens, stream=True, stream_options={"include_usage": True}, ignore_eos=True
    )
    headers = {"Authorization": f"Bearer {key}"}
    with _client.stream(
        "POST", f"{base_url}/v1/chat/completions", json=body, headers=headers
    ) as response:
        if response.status_code != 200:
            response.read()
            return StreamResult(response.status_code, body=response.json())
        return _read_sse(response, on_accepted)


def _read_sse(
    response: httpx.Response, on_accepted: Callable[[], None] | None = None
) -> StreamResult:
    result = StreamResult(response.status_code)
    for line in response.iter_lines():
        if on_accepted is not None and line.startswith("data: "):
            on_accepted()
            on_accepted = None
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        data = json.loads(line[len("data: ") :])
        if "error" in data:
            result.error = data["error"]
            continue
        result.request_id = data["id"]
        result.num_chunks += 1
        if data.get("usage"):
            result.usage = data["usage"]
        for choice in data["choices"]:
            result.text += choice["delta"].get("content") or ""
            result.finish_reason = choice["finish_reason"] or result.finish_reason
    return result


def complete_chat(base_url: str, key: str, content: str, max_tokens: int) -> StreamResult:
    """One chat without streaming: the light way to load the engine from many threads."""
    response = _client.post(
        f"{base_url}/v1/chat/completions",
        json=chat_body(content, max_tokens, ignore_eos=True),
        headers={"Authorization": f"Bearer {key}"},
    )
    body = response.json()
    if response.status_code != 200:
        return StreamResult(response.status_code, body=body, error=body.get("error"))
    choice = body["choices"][0]
    return StreamResult(
        200,
        request_id=body["id"],
        text=choice["message"]["content"],
        usage=body["usage"],
        finish_reason=choice["finish_reason"],
        body=body,
    )


# Clients per flood: each sends its next request when the last one is answered, so a
# tenant keeps this many requests waiting in the engine without a thread per request
# (on two cores, hundreds of client threads starve the live server in the same process).
FLOOD_CLIENTS = 24


def flood_without_streaming(
    base_url: str, key: str, num_requests: int, max_tokens: int, *, open_loop: bool = False
) -> list[StreamResult]:
    """`open_loop`: every request at once (a thread each), not FLOOD_CLIENTS at a time."""
    num_clients = num_requests if open_loop else min(num_requests, FLOOD_CLIENTS)
    with ThreadPoolExecutor(max_workers=num_clients) as pool:
        futures = [
            pool.submit(complete_chat, base_url, key, f"request {i}", max_tokens)
            for i in range(num_requests)
        ]
        return [future.result() for future in futures]


def flood(
    base_url: str,
    key: str,
    num_requests: int,
    max_tokens: int,
    on_accepted: Callable[[], None] | None = None,
) -> list[StreamResult]:
    """`num_requests` streaming chats at once from one tenant; every result, in order."""
    with ThreadPoolExecutor(max_workers=num_requests) as pool:
        futures = [
            pool.submit(stream_chat, base_url, key, f"request {i}", max_tokens, on_accepted)
            for i in range(num_requests)
        ]
        return [future.result() for future in futures]


def async_flood(base_url: str, key: str, num_requests: int, max_tokens: int) -> list[StreamResult]:
    """`num_requests` chats at once, each on its own connection, from one event loop (a
    thread per connection would starve the API in this same process)."""

    async def one(client: httpx.AsyncClient, n: int) -> StreamResult:
        response = await client.post(
            f"{base_url}/v1/chat/completions",
            json=chat_body(f"flood {n}", max_tokens, ignore_eos=True),
            headers={"Authorization": f"Bearer {key}"},
        )
        body = response.json()
        return StreamResult(response.status_code, body=body, error=body.get("error"))

    async def run() -> list[StreamResult]:
        limits = httpx.Limits(max_connections=num_requests, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=600, limits=limits) as client:
            return list(await asyncio.gather(*(one(client, n) for n in range(num_requests))))

    return asyncio.run(run())
