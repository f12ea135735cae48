"""Shared load generator for bench/flood.py, bench/overhead.py and bench/pool.py.

Closed-loop users POST chat completions to an OpenAI-compatible server (Parity's gateway,
or vLLM's own OpenAI server started here as the yardstick) and record one RequestResult per
response; helpers summarise them and print rich tables. Not a script of its own.
"""

from __future__ import annotations

import asyncio
import functools
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Tell me a short story about a lighthouse."
TIMEOUT_S = 600.0  # a flood queues requests for minutes; a short timeout would measure itself
console = Console()
T = TypeVar("T")


@dataclass(slots=True)
class RequestResult:
    """One HTTP response (or transport failure); times are time.monotonic() seconds."""

    tenant: str
    status: int = 0  # 0: no response at all (transport error)
    ttft_s: float = 0.0  # first content token for streams; the whole latency otherwise
    latency_s: float = 0.0
    num_tokens: int = 0  # completion tokens from the response's usage
    error: str = ""
    started_at: float = 0.0
    ended_at: float = 0.0
    retry_after_s: float = 0.0  # from a 429's Retry-After header

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one tenant's requests go. Parity knows the tenant by its key; vLLM's server by
    `vllm_xargs` (xargs), since every request there uses the same key."""

    url: str
    key: str
    tenant: str
    xargs: str | None = None


@dataclass(frozen=True, slots=True)
class Load:
    """A closed loop: num_users users send back to back until num_requests or seconds runs out.

    A 429 retried after its Retry-After does not use up one of num_requests.
    """

    model: str
    max_tokens: int
    stream: bool
    num_users: int
    num_requests: int | None = None
    seconds: float | None = None
    retry_429: bool = False

    def __post_init__(self) -> None:
        if self.num_requests is None and self.seconds is None:
            raise ValueError("a load needs num_requests or seconds: benchmarks are bounded")
        if self.num_users < 1:
            raise ValueError(f"num_users must be >= 1, got {self.num_users}")


def chat_body(
    model: str, max_tokens: int, stream: bool, tenant_xargs: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "ignore_eos": True,  # every request generates exactly max_tokens: comparable work
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if tenant_xargs is not None:
        body["vllm_xargs"] = {"tenant": tenant_xargs}
    return body


async def one_request(
    client: httpx.AsyncClient,
    url: str,
    key: str,
    *,
    model: str,
    max_tokens: int,
    stream: bool,
    tenant_xargs: str | None = None,
    tenant: str = "",
) -> RequestResult:
    """POST one chat completion; never raises for HTTP or transport failures."""
    body = chat_body(model, max_tokens, stream, tenant_xargs)
    result = RequestResult(tenant or tenant_xargs or "", started_at=time.monotonic())
    request = client.build_request(
        "POST", f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    try:
        response = await client.send(request, stream=True)
        try:
            await _read_response(response, result, stream)
        finally:
            await response.aclose()
    except (httpx.HTTPError, ValueError) as error:  # ValueError: a body that is not JSON
        result.error = f"{type(error).__name__}: {error}"
    result.ended_at = time.monotonic()
    result.latency_s = result.ended_at - result.started_at
    if not stream or not result.ttft_s:
        result.ttft_s = result.latency_s
    return result


async def _read_response(response: httpx.Response, result: RequestResult, stream: bool) -> None:
    result.status = response.status_code
    if response.status_code != 200:
        result.error = (await response.aread()).decode(errors="replace")[:200]
        result.retry_after_s = _retry_after(response.headers.get("Retry-After"))
    elif stream:
        await _read_sse(response, result)
    else:
        usage = json.loads(await response.aread()).get("usage") or {}
        result.num_tokens = usage.get("completion_tokens", 0)


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 1.0
    except ValueError:
        return 1.0


async def _read_sse(response: httpx.Response, result: RequestResult) -> None:
    # The client shares 2 cores with the server: decode JSON only while waiting for the
    # first token, then only the chunks that can carry usage or an error.
    async for line in response.aiter_lines():
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            return
        if result.ttft_s and '"completion_tokens"' not in data and '"error"' not in data:
            continue
        chunk = json.loads(data)
        if "error" in chunk:
            result.error = str(chunk["error"])[:200]
            return
        choices = chunk.get("choices") or []
        if not result.ttft_s and choices and (choices[0].get("delta") or {}).get("content"):
            result.ttft_s = time.monotonic() - result.started_at
        if chunk.get("usage"):
            result.num_tokens = chunk["usage"].get("completion_tokens", 0)


async def run_closed_loop(
    clients: Clients,
    endpoint: Endpoint,
    load: Load,
    on_result: Callable[[RequestResult], None] | None = None,
) -> list[RequestResult]:
    """Run `load` against `endpoint`; every response is kept, retried 429s included.

    `on_result` sees each request's final response (after its retries), e.g. for a progress bar.
    """
    send = functools.partial(
        one_request, url=endpoint.url, key=endpoint.key, model=load.model,
        max_tokens=load.max_tokens, stream=load.stream, tenant_xargs=endpoint.xargs,
        tenant=endpoint.tenant,
    )  # fmt: skip
    deadline = time.monotonic() + load.seconds if load.seconds is not None else float("inf")
    num_left = [load.num_requests if load.num_requests is not None else sys.maxsize]
    results: list[RequestResult] = []

    async def user() -> None:
        mine = functools.partial(send, clients.next_user())
        while num_left[0] > 0 and time.monotonic() < deadline:
            num_left[0] -= 1  # no await in between: the check and the take are atomic
            results.extend(await _until_accepted(mine, load.retry_429, deadline))
            if on_result is not None:
                on_result(results[-1])

    await asyncio.gather(*(user() for _ in range(load.num_users)))
    return results


async def _until_accepted(
    send: Callable[[], Awaitable[RequestResult]], retry_429: bool, deadline: float
) -> list[RequestResult]:
    """One request's responses: 429s are retried after their Retry-After, until the deadline."""
    responses = [await send()]
    while retry_429 and responses[-1].status == 429:
        wait_s = responses[-1].retry_after_s
        if time.monotonic() + wait_s >= deadline:
            break
        await asyncio.sleep(wait_s)
        responses.append(await send())
    return responses


# Users per HTTP client. httpcore's pool does work proportional to its connections and
# waiting requests each time a response ends: one pool of 1,200 connections kept alive by
# the server took the load generator's whole core and stalled the flood for 30 s (the
# server sat idle). Small pools keep the client from measuring itself.
USERS_PER_CLIENT = 50


class Clients:
    """HTTP clients, a small pool per `USERS_PER_CLIENT` users, made as users start, with
    generous timeouts; several loads may share them. An async context manager."""

    def __init__(self, num_connections: int) -> None:
        # 1,200 sockets go past the usual soft limit of 1,024 open files.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < num_connections + 256:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self._clients: list[httpx.AsyncClient] = []
        self._num_users = 0

    def next_user(self) -> httpx.AsyncClient:
        """The client of the next user to start: each user has a connection of its own."""
        shard = self._num_users // USERS_PER_CLIENT
        self._num_users += 1
        if shard == len(self._clients):
            limits = httpx.Limits(
                max_connections=USERS_PER_CLIENT, max_keepalive_connections=USERS_PER_CLIENT
            )
            timeout = httpx.Timeout(TIMEOUT_S)
            self._clients.append(httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False))
        return self._clients[shard]

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(client.aclose() for client in self._clients))


# --- summaries ---------------------------------------------------------------------------


def percentiles(values: Iterable[float], qs: Sequence[int] = (50, 95, 99)) -> dict[int, float]:
    data = np.fromiter(values, dtype=float)
    if data.size == 0:
        return {q: float("nan") for q in qs}
    return dict(zip(qs, (float(v) for v in np.percentile(data, qs)), strict=True))


def status_label(result: RequestResult) -> str:
    if result.status == 0:  # named by the client's exception: a reset and a timeout differ
        kind = (result.error or "").split(":", 1)[0]
        return f"transport error ({kind})" if kind else "transport error"
    return "200 + error" if result.status == 200 and result.error else str(result.status)


def status_counts(results: Iterable[RequestResult]) -> str:
    counts = Counter(status_label(r) for r in results)
    return ", ".join(f"{label}: {n}" for label, n in sorted(counts.items())) or "none"


def in_window(results: Iterable[RequestResult], start: float, end: float) -> list[RequestResult]:
    """Successful results that completed in (start, end]."""
    return [r for r in results if r.ok and start < r.ended_at <= end]


def rates(results: Iterable[RequestResult], start: float, end: float) -> tuple[float, float]:
    """(req/s, tok/s) of the successful results completed in (start, end]."""
    done = in_window(results, start, end)
    span = end - start
    if span <= 0:
        return float("nan"), float("nan")
    return len(done) / span, sum(r.num_tokens for r in done) / span


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator else "n/a"


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def progress_bar() -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    return Progress(*columns, TimeElapsedColumn(), console=console, transient=True)


def advancer(progress: Progress, label: str, total: int) -> Callable[[RequestResult], None]:
    """An on_result callback that moves a new bar of `total` requests one step per request."""
    task = progress.add_task(label, total=total)
    return lambda _result: progress.advance(task)


async def timed_run(label: str, seconds: float, run: Awaitable[T]) -> T:
    """Await a time-bound `run` under a bar that counts its seconds."""

    async def tick(progress: Progress) -> None:
        task = progress.add_task(label, total=int(seconds))
        for _ in range(int(seconds)):
            await asyncio.sleep(1)
            progress.advance(task)

    with progress_bar() as progress:
        result, _ = await asyncio.gather(run, tick(progress))
    return result
