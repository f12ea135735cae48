"""The engine's processes and the worker that hosts them: they die with it, whatever
kills the worker, and run below it.

vLLM's engine-core process does not watch its parent: after a SIGKILL of the Celery
worker it kept running (and on a GPU it keeps the memory the replacement worker needs).
Linux's parent-death signal fixes that from inside the engine process: `FairScheduler`
is built there, so it asks the kernel for a SIGKILL when the worker goes. The engine's
own worker processes watch the engine core through vLLM's death pipe and follow it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)

HOST_PID_ENV = "PARITY_ENGINE_HOST_PID"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def mark_host() -> None:
    """Called in the worker before it starts the engine: its children know whom to follow."""
    os.environ[HOST_PID_ENV] = str(os.getpid())


def die_with_host() -> bool:
    """In an engine process started by a Parity worker: SIGKILL this process when that
    worker's process ends. Returns whether the signal is armed."""
    host = os.environ.get(HOST_PID_ENV)
    if host is None or int(host) == os.getpid() or not sys.platform.startswith("linux"):
        return False  # not an engine process of a worker (a test building the scheduler)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return False
    # The worker may have died before the signal was armed: then nobody would send it.
    if os.getppid() != int(host):
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def lower_engine_priority(nice: int) -> None:
    """Put the engine's processes `nice` steps below this one. They busy-poll while they
    wait; at equal priority on a machine with few cores, admitting a request and relaying
    its tokens would wait behind that polling (ENGINE_NOTES: "Busy polling")."""
    import psutil

    if nice <= 0:
        return
    for child in psutil.Process().children(recursive=True):
        try:
            child.nice(max(child.nice(), os.getpriority(os.PRIO_PROCESS, 0) + nice))
        except psutil.Error:
            logger.warning("could not lower the priority of engine process %s", child.pid)
