"""Redis restarted mid-load, its data gone (the suite's Redis keeps none, as a cache would
after a crash): seats, queues, token streams and markers vanish at once. Every client still
gets a complete answer or a clear error, and no usage is lost: usage never lives in Redis.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections import Counter
from typing import Any

import pytest
import redis
from django.conf import settings

from tests.e2e.clients import BackgroundFlood
from tests.e2e.usage_checks import billed_and_told
from tests.stack import wait_until

pytestmark = pytest.mark.slow

NUM_STREAMS = 30
NUM_ANSWERS = 30
MAX_TOKENS = 32
WORKER_ENV = {"PARITY_WORKER_SLOTS": "4", "PARITY_MAX_NUM_SEQS": "4"}


def test_a_redis_restart_mid_load_loses_no_usage_and_leaves_no_client_waiting(
    api: Any, light: Any, heavy: Any, start_worker: Any
) -> None:
    start_worker("worker", **WORKER_ENV)
    flood = BackgroundFlood(
        api.url, (light[1].secret, NUM_STREAMS), (heavy[1].secret, NUM_ANSWERS), MAX_TOKENS
    )
    wait_until(lambda: flood.watch.answered >= 5 and flood.watch.streams_with_tokens >= 5)
    answered_before = flood.watch.answered
    restart_redis()
    streams, answers = flood.results()
    results = streams + answers

    complete = [r for r in results if r.error is None and r.usage]
    ended = [r for r in results if r not in complete]
    print(
        f"\nanswered before the restart: {answered_before} of {len(results)}; complete "
        f"{len(complete)}; errors {Counter((r.status, (r.error or {}).get('code')) for r in ended)}"
    )
    assert all(r.error is not None and r.error.get("message") for r in ended)
    billed, told = billed_and_told(complete)
    assert billed == told  # each complete answer billed once, with its tokens


def restart_redis() -> None:
    """Stop the local Redis without saving, and start it again as the suite does."""
    if shutil.which("redis-server") is None:
        pytest.fail("restarting Redis needs the local redis-server the suite runs")
    client = redis.Redis.from_url(settings.REDIS_URL)
    port = str(client.connection_pool.connection_kwargs.get("port", 6379))
    with contextlib.suppress(redis.ConnectionError):  # it closes the connection as it goes
        client.shutdown(nosave=True)
    wait_until(lambda: not _answers(client), timeout_s=30)
    subprocess.run(
        ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", port]
        + ["--save", "", "--appendonly", "no"],
        check=True,
    )
    wait_until(lambda: _answers(client), timeout_s=30)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
