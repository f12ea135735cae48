"""An engine process dies with the worker that started it, even when the worker is killed
with SIGKILL and has no chance to stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from workers.lifeline import HOST_PID_ENV, die_with_host

ROOT = Path(__file__).resolve().parents[2]

# A stand-in worker: marks itself as the host, starts an "engine" the way vLLM does (a
# spawned process), reports the engine's pid, then is killed with SIGKILL.
WORKER = """
import multiprocessing, os, signal, sys, time
sys.path.insert(0, {root!r})
from workers.lifeline import die_with_host, mark_host

def engine():
    armed = die_with_host()
    print("armed" if armed else "unarmed", os.getpid(), flush=True)
    time.sleep(600)

if __name__ == "__main__":
    mark_host()
    child = multiprocessing.get_context("spawn").Process(target=engine)
    child.start()
    time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead, only not yet reaped
        return stat.read().split(") ")[-1][0] != "Z"


def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_the_engine_process_dies_when_its_worker_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT)))
    worker = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        state, pid = worker.stdout.readline().split()
        assert state == "armed" and alive(int(pid))

        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)

        assert wait_until(lambda: not alive(int(pid)))
    finally:
        worker.kill()


def test_a_process_that_no_worker_started_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOST_PID_ENV, raising=False)

    assert die_with_host() is False


def test_the_worker_itself_is_never_armed(monkeypatch: pytest.MonkeyPatch) -> None:
    # An engine host in the test process marks it; a scheduler built there must not arm.
    monkeypatch.setenv(HOST_PID_ENV, str(os.getpid()))

    assert die_with_host() is False
