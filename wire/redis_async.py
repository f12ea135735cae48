"""Async Redis clients for coroutines: one per event loop, since an asyncio connection
belongs to the loop that opened it (production has one loop per process; tests and the
embedded mode may run several)."""

from __future__ import annotations

import asyncio
import weakref

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

RETRIES = 3  # on a dead connection, each time on a fresh one
# A burst of callers waits for a pooled connection instead of failing (redis-py's default
# pool raises once exhausted), and a reply may take 30 s (redis-py gives up after 5 s by
# default; a loaded machine can lag that far, and a call must then wait, not fail).
POOL_OPTIONS = {"timeout": 30, "socket_timeout": 30, "decode_responses": True}


def blocking_client(url: str, max_connections: int, *, retries: bool = True) -> aioredis.Redis:
    """A client whose pool makes a burst of callers wait for a connection, never fail, and
    waits up to 30 s for a reply (redis-py gives up after 5 s by default; a loaded machine
    can lag that far, and a call must then wait, not fail). Without `retries` every failure
    reaches the caller: for a loop that retries on its own and must see each outage."""
    retry = async_retry() if retries else AsyncRetry(NoBackoff(), 0)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, retry=retry, **POOL_OPTIONS
    )
    return aioredis.Redis(connection_pool=pool)


def stopping() -> bool:
    """Whether the running task has been asked to stop. A loop that retries on errors must
    check it in its error path: a cancellation can surface from a Redis call as another
    error (a connection error from a pool wait that the cancel interrupted), and a loop
    that retried it would never end (seen: a test's event loop hung at shutdown)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def async_retry() -> AsyncRetry:
    """A command that meets a dead connection runs again on a fresh one: after Redis
    restarts, every pooled connection is dead, and each would otherwise fail one call
    (seen: a restart decision lost to a stale connection, its stream cut)."""
    return AsyncRetry(ExponentialBackoff(cap=1.0, base=0.05), RETRIES, (RedisConnectionError,))


def sync_retry() -> Retry:
    """`async_retry` for the synchronous clients."""
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), RETRIES, (RedisConnectionError,))


class LoopClients:
    """`blocking_client(url, max_connections)`, one for each running event loop."""

    def __init__(self, url: str, max_connections: int) -> None:
        self.url = url
        self.max_connections = max_connections
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = blocking_client(self.url, self.max_connections)
        return client
