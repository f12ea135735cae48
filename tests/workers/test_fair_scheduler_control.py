"""The control line between a worker and the fair scheduler, and importing it bare."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.workers.vllm_factories import add_all, make_requests, make_scheduler, run_steps, step
from usage.records import SchedulerUsage, UsageStatus
from workers.control import ADDRESS_ENV, AUTHKEY_ENV, ControlServer

REPO_ROOT = Path(__file__).resolve().parents[2]


class Inbox:
    """What the worker's end received, in order."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._changed = threading.Condition()

    def __call__(self, kind: str, body: dict[str, Any]) -> None:
        with self._changed:
            self.messages.append((kind, body))
            self._changed.notify_all()

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        with self._changed:
            return [body for k, body in self.messages if k == kind]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        with self._changed:
            assert self._changed.wait_for(predicate, timeout_s), "messages did not arrive"


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
def server(inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlServer]:
    # Unix socket paths are short (108 bytes): not under pytest's deep tmp_path.
    directory = tempfile.mkdtemp(prefix="parity-ctl-", dir="/tmp")
    control = ControlServer(os.path.join(directory, "control.sock"), inbox)
    monkeypatch.setenv(ADDRESS_ENV, control.address)
    monkeypatch.setenv(AUTHKEY_ENV, control.authkey.hex())
    yield control
    control.close()
    os.rmdir(directory)


def test_usage_records_and_state_snapshots_reach_the_worker(
    tiny_model_dir: Path, server: ControlServer, inbox: Inbox
) -> None:
    scheduler = make_scheduler(tiny_model_dir, max_num_seqs=2)
    add_all(scheduler, make_requests(3, tenant="acme") + make_requests(2, tenant="globex"))
    step(scheduler)
    inbox.wait_for(lambda: len(inbox.of_kind("state")) == 1)
    scheduler.clock.advance(0.5)
    step(scheduler)  # within a second of the last state: none sent
    run_steps(scheduler, seconds=0.2)
    # The idle state follows the last usage record on the line: wait for it too, or the
    # checks below could run between the two (this test failed once that way).
    inbox.wait_for(
        lambda: (
            len(inbox.of_kind("usage")) == 5
            and (
                inbox.of_kind("state")[-1]["num_running"],
                inbox.of_kind("state")[-1]["num_waiting"],
            )
            == (0, 0)
        )
    )

    records = [SchedulerUsage.from_dict(body) for body in inbox.of_kind("usage")]
    assert sorted(u.request_id for u in records) == sorted(
        u.request_id for u in scheduler.usage_log
    )
    assert {u.status for u in records} == {UsageStatus.FINISHED}

    first_state = inbox.of_kind("state")[0]
    assert first_state["policy"] == "vtc"
    assert first_state["timestamp"] == 1_700_000_000.0
    assert (first_state["num_running"], first_state["num_waiting"]) == (2, 3)
    assert first_state["kv_blocks_total"] == 999
    assert first_state["kv_blocks_used"] > 0
    tenants = first_state["tenants"]
    # VTC admitted one request of each: acme's admission lifted its counter above globex's.
    assert (tenants["acme"]["num_running"], tenants["acme"]["num_waiting"]) == (1, 2)
    assert (tenants["globex"]["num_running"], tenants["globex"]["num_waiting"]) == (1, 1)
    assert tenants["acme"]["input_tokens"] == tenants["globex"]["input_tokens"] == 32
    # At most one state a second while busy (the clock moved 0.5 s, then 0.2 s a step), and
    # exactly one more, the last, when the engine went idle.
    states = inbox.of_kind("state")
    busy = [s for s in states if (s["num_running"], s["num_waiting"]) != (0, 0)]
    assert 2 <= len(busy) <= 1 + scheduler.clock()
    assert len(states) == len(busy) + 1 and states[-1] not in busy


def test_a_weights_message_is_applied_on_the_next_schedule(
    tiny_model_dir: Path, server: ControlServer
) -> None:
    scheduler = make_scheduler(tiny_model_dir)
    wait_until(lambda: server.num_connections == 1)

    server.send("weights", {"globex": 4, "acme": 0.5, "broken": -1, "nan": "x"})
    assert scheduler.fair_policy.weight("globex") == 1.0
    scheduler.schedule()

    policy = scheduler.fair_policy
    assert [policy.weight(t) for t in ("globex", "acme", "broken", "nan")] == [4, 0.5, 1, 1]


def test_fair_state_lists_tenants_waiting_and_running(tiny_model_dir: Path) -> None:
    scheduler = make_scheduler(tiny_model_dir, max_num_seqs=1)
    add_all(scheduler, make_requests(2, tenant="acme") + make_requests(1, tenant="globex"))
    step(scheduler)
    state = scheduler.fair_state()
    assert state["num_running"] == 1 and state["num_waiting"] == 2
    counts = {t: (v["num_waiting"], v["num_running"]) for t, v in state["tenants"].items()}
    assert counts == {"acme": (1, 1), "globex": (1, 0)}


def test_importing_the_scheduler_needs_no_django_settings() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "PARITY"))}
    code = (
        "import sys, workers.vllm_scheduler as m; "
        "assert 'django' not in sys.modules, 'django was imported'; "
        "print(m.FairScheduler.__mro__[1].__module__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "vllm.v1.core.sched.scheduler"


def test_the_engine_going_idle_publishes_an_empty_state_at_once(
    tiny_model_dir: Path, server: ControlServer, inbox: Inbox
) -> None:
    scheduler = make_scheduler(tiny_model_dir, max_num_seqs=2)
    add_all(scheduler, make_requests(2, tenant="acme"))
    step(scheduler)
    inbox.wait_for(lambda: len(inbox.of_kind("state")) == 1)

    steps = run_steps(scheduler)  # 10 ms a step: within the second the states are limited to

    def idle(state: dict[str, Any]) -> bool:
        return (state["num_running"], state["num_waiting"]) == (0, 0)

    inbox.wait_for(lambda: any(idle(state) for state in inbox.of_kind("state")))
    assert steps * 0.01 < 1.0
    last = inbox.of_kind("state")[-1]
    assert idle(last) and last["tenants"]["acme"]["num_finished"] == 2
