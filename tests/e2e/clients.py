"""Small HTTP clients for the end-to-end tests: SSE parsing, floods from many threads."""

from __future__ import annotations

import asyncio
import json
import threading
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
    # From the usage every chunk carries (`continuous_usage_stats`): what the client got,
    # even of a stream that ended early.
    prompt_tokens_seen: int = 0
    output_tokens_received: int = 0


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
    body = stream_body(content, max_tokens)
    headers = {"Authorization": f"Bearer {key}"}
    with _client.stream(
        "POST", f"{base_url}/v1/chat/completions", json=body, headers=headers
    ) as response:
        if response.status_code != 200:
            response.read()
            return StreamResult(response.status_code, body=response.json())
        return _read_sse(response, on_accepted)


def stream_body(content: str, max_tokens: int) -> dict[str, Any]:
    options = {"include_usage": True, "continuous_usage_stats": True}
    return chat_body(content, max_tokens, stream=True, stream_options=options, ignore_eos=True)


def _read_sse(
    response: httpx.Response, on_accepted: Callable[[], None] | None = None
) -> StreamResult:
    result = StreamResult(response.status_code)
    for line in response.iter_lines():
        if on_accepted is not None and line.startswith("data: "):
            on_accepted()
            on_accepted = None
        read_sse_line(result, line)
    return result


def read_sse_line(result: StreamResult, line: str) -> None:
    if not line.startswith("data: ") or line == "data: [DONE]":
        return
    data = json.loads(line[len("data: ") :])
    if "error" in data:
        result.error = data["error"]
        return
    result.request_id = data["id"]
    result.num_chunks += 1
    usage = data.get("usage")
    if usage:
        result.prompt_tokens_seen = usage["prompt_tokens"]
        result.output_tokens_received = usage["completion_tokens"]
        if not data["choices"]:  # the last chunk: the whole request's usage
            result.usage = usage
    for choice in data["choices"]:
        result.text += choice["delta"].get("content") or ""
        result.finish_reason = choice["finish_reason"] or result.finish_reason


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


@dataclass(slots=True)
class FloodWatch:
    """What a running flood has seen so far, for the test's thread to wait on."""

    streams_with_tokens: int = 0
    answered: int = 0


def async_mixed_flood(
    base_url: str,
    streams: tuple[str, int],
    answers: tuple[str, int],
    max_tokens: int,
    watch: FloodWatch | None = None,
) -> tuple[list[StreamResult], list[StreamResult]]:
    """Streamed chats (key, count) and whole-answer chats (key, count), all open at once on
    connections of their own, from one event loop."""
    watch = watch or FloodWatch()

    async def stream(client: httpx.AsyncClient, key: str, n: int) -> StreamResult:
        body = stream_body(f"stream {n}", max_tokens)
        headers = {"Authorization": f"Bearer {key}"}
        url = f"{base_url}/v1/chat/completions"
        try:
            async with client.stream("POST", url, json=body, headers=headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    body = response.json()
                    return StreamResult(response.status_code, body=body, error=body.get("error"))
                result = StreamResult(response.status_code)
                async for line in response.aiter_lines():
                    had_tokens = result.output_tokens_received > 0
                    read_sse_line(result, line)
                    if not had_tokens and result.output_tokens_received > 0:
                        watch.streams_with_tokens += 1
                watch.answered += 1
                return result
        except httpx.TransportError as exc:
            return StreamResult(0, error={"message": f"transport: {exc!r}"})

    async def answer(client: httpx.AsyncClient, key: str, n: int) -> StreamResult:
        response = await client.post(
            f"{base_url}/v1/chat/completions",
            json=chat_body(f"answer {n}", max_tokens, ignore_eos=True),
            headers={"Authorization": f"Bearer {key}"},
        )
        body = response.json()
        watch.answered += 1
        if response.status_code != 200:
            return StreamResult(response.status_code, body=body, error=body.get("error"))
        return StreamResult(200, request_id=body["id"], usage=body["usage"], body=body)

    async def run() -> tuple[list[StreamResult], list[StreamResult]]:
        total = streams[1] + answers[1]
        limits = httpx.Limits(max_connections=total, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=600, limits=limits) as client:
            streamed = [stream(client, streams[0], n) for n in range(streams[1])]
            whole = [answer(client, answers[0], n) for n in range(answers[1])]
            results = await asyncio.gather(*streamed, *whole)
        return list(results[: streams[1]]), list(results[streams[1] :])

    return asyncio.run(run())


class BackgroundFlood:
    """`async_mixed_flood` on a thread of its own, so the test can break things meanwhile."""

    def __init__(
        self,
        base_url: str,
        streams: tuple[str, int],
        answers: tuple[str, int],
        max_tokens: int,
    ) -> None:
        self.watch = FloodWatch()
        self._outcome: list[tuple[list[StreamResult], list[StreamResult]]] = []
        self._thread = threading.Thread(
            target=lambda: self._outcome.append(
                async_mixed_flood(base_url, streams, answers, max_tokens, self.watch)
            )
        )
        self._thread.start()

    def results(self, timeout_s: float = 600) -> tuple[list[StreamResult], list[StreamResult]]:
        """(streamed, whole answers) once every client has its answer."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "a client is still waiting for its answer"
        return self._outcome[0]
