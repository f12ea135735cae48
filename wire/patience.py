"""Waiting out a Redis restart.

A worker that meets a Redis error while it takes, runs or finishes a request must not fail
the task: the broker would count it as handled and the request would be lost, its client
waiting for the request timeout. The call is retried with backoff instead, for as long as
a client could still be waiting (`patient`). The gateway rides out a restart (seconds) at
the gate before it answers 503 (`patiently`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import redis

from wire.redis_async import stopping

logger = logging.getLogger(__name__)

PATIENCE_S = 600.0  # the gateway's request timeout: no client waits longer
BACKOFF_S = 0.1
BACKOFF_MAX_S = 2.0

P = ParamSpec("P")
R = TypeVar("R")


def patient(call: Callable[P, R]) -> Callable[P, R]:
    """Retry `call` on Redis connection errors and timeouts, with backoff."""

    @functools.wraps(call)
    def retried(*args: P.args, **kwargs: P.kwargs) -> R:
        deadline = time.monotonic() + PATIENCE_S
        attempt = 0
        while True:
            try:
                return call(*args, **kwargs)
            except (redis.ConnectionError, redis.TimeoutError):
                attempt += 1
                if time.monotonic() >= deadline:
                    raise
                if attempt == 1:
                    logger.warning("Redis is unreachable in %s; retrying", call.__name__)
                time.sleep(backoff_s(attempt))

    return retried


def backoff_s(attempt: int) -> float:
    """Seconds to wait before try `attempt + 1` (the first retry waits BACKOFF_S)."""
    return float(min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (attempt - 1)))


async def patiently(call: Callable[[], Awaitable[R]], patience_s: float) -> R:
    """Await `call()`, retrying on Redis connection errors and timeouts for `patience_s`:
    the gateway's side, which rides out a Redis restart before it answers 503."""
    deadline = time.monotonic() + patience_s
    attempt = 0
    while True:
        try:
            return await call()
        except (redis.ConnectionError, redis.TimeoutError):
            attempt += 1
            if time.monotonic() >= deadline or stopping():
                raise
            await asyncio.sleep(backoff_s(attempt))
