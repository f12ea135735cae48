"""Fixtures of the whole stack for the end-to-end and fault tests (`tests/stack.py` holds
the pieces): the API under uvicorn, a real Celery worker hosting a real vLLM engine.
One engine for the whole session: it takes about half a minute to start on the CPU."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tenants.models import IssuedKey, Plan, Tenant
from tests.stack import (
    MAX_MODEL_LEN,
    ApiProcess,
    AsgiServer,
    EngineWorker,
    fresh_fairness,
    tenant_with_key,
    wait_for_an_empty_pool,
    wait_until_quiet,
)
from tests.tenants.factories import make_plan


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


@pytest.fixture(scope="session")
def asgi_server() -> Iterator[AsgiServer]:
    server = AsgiServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api(asgi_server: AsgiServer, transactional_db: None, settings: Any) -> Iterator[AsgiServer]:
    """The API's base URL; the engine workers behind it are the test's business."""
    settings.PARITY_MAX_MODEL_LEN = MAX_MODEL_LEN  # the API must agree with the workers
    fresh_fairness()
    yield asgi_server
    wait_until_quiet()


@pytest.fixture
def served(engine_worker: EngineWorker, api: AsgiServer) -> AsgiServer:
    """The API's base URL, with the session's engine worker serving behind it."""
    return api


@pytest.fixture
def start_worker(
    tiny_model: Path, tmp_path: Path, django_db_blocker: Any, transactional_db: None
) -> Iterator[Callable[..., EngineWorker]]:
    """Starts engine workers of the test's own (`start_worker(name, **env)`); whatever is
    still running at the end is stopped, before the database is emptied."""
    started: list[EngineWorker] = []
    wait_for_an_empty_pool()  # a worker an earlier test killed leaves within its TTL

    def start(name: str, **env: str) -> EngineWorker:
        worker = EngineWorker(tiny_model, tmp_path / f"{name}.log", purge=False, env=env)
        with django_db_blocker.unblock():
            worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process is not None and worker.process.poll() is None:
            worker.terminate()
        else:
            worker.kill_group()


@pytest.fixture
def start_api(tmp_path: Path, transactional_db: None) -> Iterator[Callable[[], ApiProcess]]:
    """Starts `parity web` processes of the test's own; killed at the end if still alive."""
    started: list[ApiProcess] = []

    def start() -> ApiProcess:
        process = ApiProcess(tmp_path / f"api-{len(started)}.log")
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def plan(transactional_db: None) -> Plan:
    return make_plan(name="Standard")


@pytest.fixture
def light(plan: Plan) -> tuple[Tenant, IssuedKey]:
    return tenant_with_key("light", plan, weight=Decimal(1))


@pytest.fixture
def heavy(plan: Plan) -> tuple[Tenant, IssuedKey]:
    return tenant_with_key("heavy", plan, weight=Decimal(3))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The tests that share the session's engine worker run first; the shutdown test stops
    # that worker, so it runs after them; then the fault tests, which start and kill
    # workers of their own (the session's would join their pool); then the rest of the
    # suite, without an engine.
    def group(item: pytest.Item) -> int:
        if "tests/e2e/test_worker_shutdown" in item.nodeid:
            return 1
        if "tests/e2e/" in item.nodeid:
            return 0
        return 2 if "tests/faults/" in item.nodeid else 3

    items.sort(key=group)


LOG_TAIL_LINES = 60


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test that ran with an engine worker or an API process shows the end of
    their logs: a failure seen once in CI can then be read, not guessed at."""
    report = yield
    if report.failed:
        for name, path in _stack_logs(item):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                report.sections.append((f"end of {name} ({path})", "\n".join(tail)))
    return report


def _stack_logs(item: pytest.Item) -> list[tuple[str, Path]]:
    funcargs = getattr(item, "funcargs", {})
    logs = []
    worker = funcargs.get("engine_worker")  # funcargs holds the fixtures' whole closure
    if isinstance(worker, EngineWorker):
        logs.append(("the engine worker's log", worker.log_path))
    tmp_path = funcargs.get("tmp_path")
    if isinstance(tmp_path, Path):  # workers and API processes a test started itself
        logs += [(path.stem, path) for path in sorted(tmp_path.glob("*.log"))]
    return logs
