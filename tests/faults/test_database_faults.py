"""PostgreSQL trouble while workers bill: every connection of the test database killed
(`pg_terminate_backend`) again and again during a flood, then PostgreSQL itself restarted.
No usage is lost, none is doubled, and none is quarantined: an outage is waited out, a
quarantine is only for rows the database refuses."""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any

import psycopg
import pytest
from django.db import connections

from tests.e2e.clients import BackgroundFlood
from tests.e2e.usage_checks import billed_and_told
from tests.stack import stack_database_url, wait_until
from usage.models import QuarantinedUsage

pytestmark = pytest.mark.slow

NUM_STREAMS = 30
NUM_ANSWERS = 120
MAX_TOKENS = 48
WORKER_ENV = {"PARITY_WORKER_SLOTS": "4", "PARITY_MAX_NUM_SEQS": "4"}
KILL_ROUNDS = 4
KILL_EVERY_S = 0.3


def test_connections_killed_and_a_restart_during_flushes_lose_and_double_nothing(
    api: Any, light: Any, heavy: Any, start_worker: Any
) -> None:
    start_worker("worker", **WORKER_ENV)
    flood = BackgroundFlood(
        api.url, (light[1].secret, NUM_STREAMS), (heavy[1].secret, NUM_ANSWERS), MAX_TOKENS
    )
    wait_until(lambda: flood.watch.answered >= 5)
    killed = sum(_kill_connections() for _ in _every(KILL_EVERY_S, KILL_ROUNDS))
    answered_before_restart = flood.watch.answered
    restart_postgres()
    killed += sum(_kill_connections() for _ in _every(KILL_EVERY_S, KILL_ROUNDS))
    streams, answers = flood.results()
    connections.close_all()  # the test's own connection died with the others
    results = streams + answers

    complete = [r for r in results if r.error is None and r.usage]
    print(
        f"\nconnections killed: {killed}; answered before the restart: "
        f"{answered_before_restart} of {len(results)}; complete {len(complete)}; "
        f"other answers: {[r.status for r in results if r not in complete]}"
    )
    assert killed > 0
    assert answered_before_restart < len(results)  # the restart came mid-load
    # A request that met the outage at the door may be refused (503), never left hanging.
    assert all(r in complete or r.status == 503 for r in results)
    billed, told = billed_and_told(complete)
    assert billed == told  # each complete answer billed once, with its tokens
    assert QuarantinedUsage.objects.count() == 0


def restart_postgres() -> None:
    """Restart the local PostgreSQL server as its operator would (fast shutdown)."""
    cluster = _local_cluster()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "restart", "-m", "fast"],
        check=True,
    )
    wait_until(_postgres_answers, timeout_s=60)


def _local_cluster() -> list[str]:
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        pytest.fail("restarting PostgreSQL needs pg_ctlcluster (the suite's local server)")
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True)
    version, name = listing.stdout.split()[:2]
    return [version, name]


def _postgres_answers() -> bool:
    try:
        psycopg.connect(_maintenance_url(), connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


def _maintenance_url() -> str:
    return stack_database_url().rsplit("/", 1)[0] + "/postgres"


def _kill_connections() -> int:
    """Terminate every connection to the test database (workers, API, this test)."""
    database = stack_database_url().rsplit("/", 1)[1]
    try:
        with psycopg.connect(_maintenance_url(), autocommit=True) as admin:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [database],
            ).fetchall()
    except psycopg.OperationalError:
        return 0  # the server is restarting
    return sum(1 for (done,) in rows if done)


def _every(interval_s: float, rounds: int) -> Any:
    for _ in range(rounds):
        yield
        time.sleep(interval_s)
