"""Make sure the PostgreSQL, Redis and broker (RabbitMQ or Redis) the test suite uses are up.

Uses DATABASE_URL, REDIS_URL and CELERY_BROKER_URL. A local server that is installed but
stopped is started; a missing one stops the run with a message naming what to install.
Remote servers are only checked, never started.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}


def postgres_ready(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(_maintenance_db(url), connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


def _maintenance_db(url: str) -> str:
    # The test database does not exist yet (pytest creates it): connect to "postgres".
    parts = urlsplit(url)
    return parts._replace(scheme="postgresql", path="/postgres").geturl()


def redis_ready(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def start_postgres() -> str | None:
    clusters = glob.glob("/etc/postgresql/*/main")
    if shutil.which("pg_ctlcluster") and clusters:
        version = clusters[0].split("/")[3]
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False
        )
        return None
    return "PostgreSQL is not installed: apt-get install postgresql (or set DATABASE_URL)."


def start_redis() -> str | None:
    if shutil.which("redis-server"):
        subprocess.run(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            check=False,
        )
        return None
    return "Redis is not installed: apt-get install redis-server (or set REDIS_URL)."


def broker_ready(url: str) -> bool:
    if url.startswith(("redis", "rediss")):
        return redis_ready(url)
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


def start_rabbitmq() -> str | None:
    if shutil.which("rabbitmq-server"):
        subprocess.run(["rabbitmq-server", "-detached"], check=False)
        return None
    return (
        "RabbitMQ is not installed: apt-get install rabbitmq-server "
        "(or set CELERY_BROKER_URL=redis://127.0.0.1:6379/1 to use Redis as the broker)."
    )


def ensure(
    name: str, url: str, ready: Callable[[str], bool], start: Callable[[], str | None]
) -> str | None:
    if ready(url):
        return None
    if urlsplit(url).hostname not in LOCAL_HOSTS:
        return f"{name} at {url} does not answer; start it or point the URL elsewhere."
    print(f"{name} is not running at {url}: starting it…", flush=True)
    problem = start()
    if problem:
        return problem
    for _ in range(60):  # RabbitMQ takes several seconds to boot
        if ready(url):
            return None
        time.sleep(0.5)
    return f"{name} did not come up at {url} within 30 s; check its logs."


def main() -> int:
    problems = [
        ensure("PostgreSQL", os.environ["DATABASE_URL"], postgres_ready, start_postgres),
        ensure("Redis", os.environ["REDIS_URL"], redis_ready, start_redis),
    ]
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if broker.startswith("amqp"):
        problems.append(ensure("RabbitMQ", broker, broker_ready, start_rabbitmq))
    for problem in filter(None, problems):
        print(f"error: {problem}", file=sys.stderr)
    return 1 if any(problems) else 0


if __name__ == "__main__":
    sys.exit(main())
