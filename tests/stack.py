"""The whole stack for end-to-end and fault tests: the API under uvicorn, a real Celery
worker hosting a real vLLM engine (the fixtures are in `tests/conftest.py`).

The API is production's ASGI app on uvicorn, on a thread of this process; the worker runs
as a subprocess (its own process group) against the same test database, Redis and broker.
One engine for the whole session: it takes about half a minute to start on the CPU.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings

from tenants.models import IssuedKey, Plan, Tenant
from tests.tenants.factories import make_key, make_tenant
from wire.gate import WORKER_TTL_S
from workers import runtime

ROOT = Path(__file__).resolve().parents[1]
# One sequence at a time, and one more request in the engine's own queue: the backlog
# forms at the pool's fair gate, and the engine's serial order is the order of service.
ENGINE_MAX_NUM_SEQS = 1
WORKER_SLOTS = 2
ENGINE_START_TIMEOUT_S = 180
MAX_MODEL_LEN = 32768  # the tiny model's whole context: room for long generations


_worker_numbers = itertools.count(1)


class EngineWorker:
    """A `celery worker -Q gpu` subprocess with its engine, started and stopped on demand."""

    def __init__(
        self,
        model_dir: Path,
        log_path: Path,
        *,
        purge: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.purge = purge
        self.extra_env = env or {}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.leftovers = False

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": stack_database_url(),
            "PARITY_MODEL_PATH": str(self.model_dir),
            "PARITY_MAX_NUM_SEQS": str(ENGINE_MAX_NUM_SEQS),
            "PARITY_MAX_MODEL_LEN": str(MAX_MODEL_LEN),
            "PARITY_WORKER_SLOTS": str(WORKER_SLOTS),
            "PARITY_STATE_INTERVAL_S": "0.1",  # fine-grained samples for the fairness test
            "HF_HUB_OFFLINE": "1",
            "LOG_LEVEL": "INFO",
            **self.extra_env,
        }

    def start(self) -> None:
        if self.purge:
            _purge_engine_queue()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                # niced: on two cores vLLM's busy-polling engine would otherwise starve this
                # process, which plays both the API and its clients (production runs them
                # on machines of their own).
                "nice",
                "-n",
                "10",
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                settings.PARITY_ENGINE_QUEUE,
                "-n",
                f"e2e-{os.getpid()}-{next(_worker_numbers)}@%h",
                "--without-mingle",
                "--without-gossip",
                "--loglevel",
                "INFO",
            ],
            cwd=ROOT,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown can reach the engine
        )
        try:
            self.wait_until_serving()
        except BaseException:
            self.kill_group()
            raise

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited at start; see {self.log_path}")
            if self.state() is not None:
                return
            time.sleep(0.5)
        raise RuntimeError(f"the engine did not start in time; see {self.log_path}")

    def state(self) -> dict[str, Any] | None:
        """This worker's live state (states of earlier, dead workers are ignored)."""
        assert self.process is not None
        for name, state in runtime.channels().states().items():
            if name.endswith(f":{self.process.pid}"):
                return state
        return None

    def history(self) -> list[dict[str, Any]]:
        assert self.process is not None
        for name in runtime.channels().states():
            if name.endswith(f":{self.process.pid}"):
                return runtime.channels().state_history(name)
        return []

    def terminate(self, timeout_s: float = 120) -> int:
        """SIGTERM (Celery's warm shutdown) to the worker; kill the group if it hangs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        finally:
            time.sleep(2)  # the engine's children exit just after the worker
            self.leftovers = self.group_alive()
            self.kill_group()

    def kill_worker_process(self) -> None:
        """SIGKILL the worker's own process, not its group: the engine must follow alone."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def wait_for_group_exit(self, timeout_s: float) -> bool:
        """Whether every process of the group (the engine's) ended within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self.group_alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def group_alive(self) -> bool:
        """Whether any process of the worker's group (its engine included) still runs."""
        assert self.process is not None
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill_group(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _purge_engine_queue() -> None:
    # Messages left by an interrupted earlier run would be served for tenants gone since.
    from config.celery import app

    with app.connection_for_write() as connection:
        connection.default_channel.queue_declare(
            settings.PARITY_ENGINE_QUEUE, durable=True, auto_delete=False
        )
        connection.default_channel.queue_purge(settings.PARITY_ENGINE_QUEUE)


def stack_database_url() -> str:
    """The test database, for processes of the stack started by a test."""
    database = settings.DATABASES["default"]
    return f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ApiProcess:
    """`parity web` in a process of its own, for a test that kills it."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = f"from config.cli import main; main(['web', '--bind', '127.0.0.1:{self.port}'])"
        env = {**os.environ, "DATABASE_URL": stack_database_url(), "HF_HUB_OFFLINE": "1"}
        env["PARITY_MAX_MODEL_LEN"] = str(MAX_MODEL_LEN)
        self.process = subprocess.Popen(
            [sys.executable, "-c", command],
            cwd=ROOT,
            env=env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start; see {self.log_path}")
            time.sleep(0.2)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


class AsgiServer:
    """`parity web`'s app and server (uvicorn), on a thread of this process."""

    def __init__(self) -> None:
        import uvicorn

        from config.server_options import SERVER_OPTIONS

        self.port = free_port()
        config = uvicorn.Config(
            "config.asgi:application",
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            **SERVER_OPTIONS,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="asgi", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the ASGI server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


QUIET_TIMEOUT_S = 60
LIVE_STATE_AGE_S = 2.0  # workers publish every 0.1 s here; older states are dead workers'


def wait_until_quiet() -> None:
    """Wait until every live worker runs nothing and has stored all its usage.

    The test database is emptied (TRUNCATE) after each test; a usage row a worker was
    still writing then deadlocks with the TRUNCATE, and PostgreSQL may cancel the TRUNCATE,
    leaving this test's rows to break the next test (seen in CI)."""
    deadline = time.monotonic() + QUIET_TIMEOUT_S
    while time.monotonic() < deadline:
        live = [
            state
            for state in runtime.channels().states().values()
            if time.time() - float(state.get("published_at", 0)) < LIVE_STATE_AGE_S
        ]
        if all(
            state.get("num_in_flight") == 0 and state.get("usage_backlog_bytes") == 0
            for state in live
        ):
            return
        time.sleep(0.1)


def wait_until(condition: Callable[[], Any], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def wait_for_an_empty_pool(timeout_s: float = 3 * WORKER_TTL_S) -> None:
    """Until no worker is left in the pool (a killed one leaves when its TTL runs out)."""
    deadline = time.monotonic() + timeout_s
    while runtime.gate().state().capacity and time.monotonic() < deadline:
        time.sleep(0.2)


def fresh_fairness() -> None:
    """Forget the gate's counters: each test's tenants start even, as in a new deployment.
    (Seats, queues and workers stay: they are live.)"""
    from wire.redis_gate import RedisGate

    gate = runtime.gate()
    assert isinstance(gate, RedisGate)
    gate.redis.delete(*(gate.prefix + key for key in ("counters", "last-leaver", "weights")))


def tenant_with_key(slug: str, plan: Plan, **fields: Any) -> tuple[Tenant, IssuedKey]:
    tenant = make_tenant(slug, plan=plan, max_concurrent_requests=1000, **fields)
    return tenant, make_key(tenant, f"{slug}-key")
