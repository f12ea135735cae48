"""End-to-end cast: the API under uvicorn, a real Celery worker hosting a real vLLM engine.

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
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tenants.models import IssuedKey, Plan, Tenant
from tests.tenants.factories import make_key, make_plan, make_tenant
from workers import runtime

ROOT = Path(__file__).resolve().parents[2]
# One sequence at a time, and one more request in the engine's own queue: the backlog
# forms at the pool's fair gate, and the engine's serial order is the order of service.
ENGINE_MAX_NUM_SEQS = 1
WORKER_SLOTS = 2
ENGINE_START_TIMEOUT_S = 180
MAX_MODEL_LEN = 32768  # the tiny model's whole context: room for long generations


_worker_numbers = itertools.count(1)


class EngineWorker:
    """A `celery worker -Q gpu` subprocess with its engine, started and stopped on demand."""

    def __init__(self, model_dir: Path, log_path: Path, *, purge: bool = True) -> None:
        self.model_dir = model_dir
        self.purge = purge
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.leftovers = False

    def env(self) -> dict[str, str]:
        database = settings.DATABASES["default"]
        db_url = (
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/"
            f"{database['NAME']}"
        )
        return {
            **os.environ,
            "DATABASE_URL": db_url,
            "PARITY_MODEL_PATH": str(self.model_dir),
            "PARITY_MAX_NUM_SEQS": str(ENGINE_MAX_NUM_SEQS),
            "PARITY_MAX_MODEL_LEN": str(MAX_MODEL_LEN),
            "PARITY_WORKER_SLOTS": str(WORKER_SLOTS),
            "PARITY_STATE_INTERVAL_S": "0.1",  # fine-grained samples for the fairness test
            "HF_HUB_OFFLINE": "1",
            "LOG_LEVEL": "INFO",
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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.tiny_model import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("models") / "parity-tiny")


@pytest.fixture(scope="session")
def engine_worker(
    django_db_setup: None,
    django_db_blocker: Any,
    tiny_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EngineWorker]:
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = EngineWorker(tiny_model, log_path)
    with django_db_blocker.unblock():
        worker.start()
    yield worker
    if worker.process is not None and worker.process.poll() is None:
        worker.terminate()


class AsgiServer:
    """`parity web`'s app and server (uvicorn), on a thread of this process."""

    def __init__(self) -> None:
        import uvicorn

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            "config.asgi:application",
            host="127.0.0.1",
            port=self.port,
            lifespan="off",
            backlog=4096,
            log_level="warning",
            access_log=False,
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


@pytest.fixture(scope="session")
def asgi_server() -> Iterator[AsgiServer]:
    server = AsgiServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def served(
    engine_worker: EngineWorker, asgi_server: AsgiServer, transactional_db: None, settings: Any
) -> AsgiServer:
    """The API's base URL, with an engine worker serving behind it."""
    settings.PARITY_MAX_MODEL_LEN = MAX_MODEL_LEN  # the API must agree with the worker
    fresh_fairness()
    return asgi_server


def fresh_fairness() -> None:
    """Forget the gate's counters: each test's tenants start even, as in a new deployment.
    (Seats, queues and workers stay: they are live.)"""
    from wire.redis_gate import RedisGate

    gate = runtime.gate()
    assert isinstance(gate, RedisGate)
    gate.redis.delete(*(gate.prefix + key for key in ("counters", "last-leaver", "weights")))


@pytest.fixture
def plan(transactional_db: None) -> Plan:
    return make_plan(name="Standard")


def tenant_with_key(slug: str, plan: Plan, **fields: Any) -> tuple[Tenant, IssuedKey]:
    tenant = make_tenant(slug, plan=plan, max_concurrent_requests=1000, **fields)
    return tenant, make_key(tenant, f"{slug}-key")


@pytest.fixture
def light(plan: Plan) -> tuple[Tenant, IssuedKey]:
    return tenant_with_key("light", plan, weight=Decimal(1))


@pytest.fixture
def heavy(plan: Plan) -> tuple[Tenant, IssuedKey]:
    return tenant_with_key("heavy", plan, weight=Decimal(3))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The shutdown test stops the shared engine worker: run it after the other e2e tests
    # (and so stop the engine before the rest of the suite runs).
    def group(item: pytest.Item) -> int:
        if "tests/e2e/" not in item.nodeid:
            return 2
        return 1 if "test_worker_shutdown" in item.nodeid else 0

    items.sort(key=group)
