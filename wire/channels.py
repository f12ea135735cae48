"""The fast lanes between the API and the engine pool, apart from the broker.

- event streams: the worker publishes a request's tokens; the API reads them (SSE);
- aborts: the API asks, the worker that holds the request cancels it in the engine;
- once-only markers: delivery attempts and "usage recorded" per request id;
- live scheduler state, one entry per worker, for dashboards.

`RedisChannels` is production (and the test suite); `LocalChannels` keeps the same
contract inside one process, for the embedded mode, which runs the web server and the
worker together with no external service.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from abc import ABC, abstractmethod
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
STATE_TTL_S = 5.0
STATE_HISTORY = 3600  # about an hour of one-second states


class Channels(ABC):
    """Contract shared by the Redis and in-process implementations."""

    # -- event streams ------------------------------------------------------------
    @abstractmethod
    def publish(self, request_id: str, event: Event) -> None:
        """Append an event to the request's stream (never blocks on the network)."""

    @abstractmethod
    def read(self, request_id: str, cursor: str, timeout_s: float) -> tuple[str, list[Event]]:
        """Events after `cursor` ("0" = from the start); waits up to `timeout_s` for one."""

    @abstractmethod
    async def aread(
        self, request_id: str, cursor: str, timeout_s: float
    ) -> tuple[str, list[Event]]:
        """`read` for a coroutine: waits without holding a thread."""

    def flush(self) -> None:  # noqa: B027 - in-process channels have nothing to flush
        """Wait until every published event is readable."""

    @abstractmethod
    def discard(self, request_id: str) -> None:
        """The reader is done with the request's stream: free it."""

    async def adiscard(self, request_id: str) -> None:
        self.discard(request_id)

    # -- aborts ---------------------------------------------------------------------
    @abstractmethod
    def request_abort(self, request_id: str) -> None: ...

    async def arequest_abort(self, request_id: str) -> None:
        self.request_abort(request_id)

    @abstractmethod
    def abort_requested(self, request_id: str) -> bool: ...

    @abstractmethod
    def listen_aborts(self, callback: Callable[[str], None]) -> None:
        """Call `callback(request_id)` on a background thread for every abort asked."""

    def aborts_requested(self, request_ids: list[str]) -> set[str]:
        """Which of these requests have an abort asked (the sweep behind `listen_aborts`)."""
        return {rid for rid in request_ids if self.abort_requested(rid)}

    # -- once-only markers ---------------------------------------------------------
    @abstractmethod
    def next_attempt(self, request_id: str) -> int:
        """1 for the first delivery of a request, 2 for the next, and so on."""

    @abstractmethod
    def mark_done(self, request_id: str) -> bool:
        """Mark the request's usage as recorded; False if it already was."""

    @abstractmethod
    def is_done(self, request_id: str) -> bool: ...

    # -- live state -------------------------------------------------------------------
    @abstractmethod
    def publish_state(self, worker: str, state: dict[str, Any]) -> None: ...

    @abstractmethod
    def states(self) -> dict[str, dict[str, Any]]:
        """The latest state of every live worker (one that published in the last seconds)."""

    @abstractmethod
    def state_history(self, worker: str, limit: int = STATE_HISTORY) -> list[dict[str, Any]]:
        """A worker's recent states, oldest first: time series for dashboards and tests."""

    def close(self) -> None:
        return None


class LocalChannels(Channels):
    """Everything in this process's memory, guarded by one condition variable."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._streams: dict[str, list[Event]] = defaultdict(list)
        self._aborts: set[str] = set()
        self._abort_listeners: list[Callable[[str], None]] = []
        self._attempts: dict[str, int] = defaultdict(int)
        self._done: set[str] = set()
        # Async readers waiting for a stream's next event: (their loop, a future to resolve).
        self._async_readers: dict[
            str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]
        ] = defaultdict(list)
        self._states: dict[str, tuple[float, dict[str, Any]]] = {}
        self._history: dict[str, deque[dict[str, Any]]] = defaultdict(
            lambda: deque(maxlen=STATE_HISTORY)
        )

    def publish(self, request_id: str, event: Event) -> None:
        with self._cond:
            self._streams[request_id].append(event)
            self._cond.notify_all()
            readers = self._async_readers.pop(request_id, [])
        for loop, future in readers:
            loop.call_soon_threadsafe(_wake, future)

    def read(self, request_id: str, cursor: str, timeout_s: float) -> tuple[str, list[Event]]:
        start = int(cursor)
        deadline = self._clock() + timeout_s
        with self._cond:
            while len(self._streams[request_id]) <= start:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return cursor, []
                self._cond.wait(remaining)
            events = self._streams[request_id][start:]
        return str(start + len(events)), events

    async def aread(
        self, request_id: str, cursor: str, timeout_s: float
    ) -> tuple[str, list[Event]]:
        start = int(cursor)
        loop = asyncio.get_running_loop()
        with self._cond:
            events = self._streams[request_id][start:]
            if not events:
                future: asyncio.Future[None] = loop.create_future()
                self._async_readers[request_id].append((loop, future))
        if not events:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, timeout_s)
            with self._cond:
                events = self._streams[request_id][start:]
        return str(start + len(events)), events

    def discard(self, request_id: str) -> None:
        with self._cond:
            self._async_readers.pop(request_id, None)
            self._streams.pop(request_id, None)

    def request_abort(self, request_id: str) -> None:
        with self._cond:
            self._aborts.add(request_id)
            listeners = list(self._abort_listeners)
        for listener in listeners:
            listener(request_id)

    def abort_requested(self, request_id: str) -> bool:
        with self._cond:
            return request_id in self._aborts

    def listen_aborts(self, callback: Callable[[str], None]) -> None:
        with self._cond:
            self._abort_listeners.append(callback)

    def next_attempt(self, request_id: str) -> int:
        with self._cond:
            self._attempts[request_id] += 1
            return self._attempts[request_id]

    def mark_done(self, request_id: str) -> bool:
        with self._cond:
            first = request_id not in self._done
            self._done.add(request_id)
            return first

    def is_done(self, request_id: str) -> bool:
        with self._cond:
            return request_id in self._done

    def publish_state(self, worker: str, state: dict[str, Any]) -> None:
        with self._cond:
            self._states[worker] = (self._clock() + STATE_TTL_S, state)
            self._history[worker].append(state)

    def states(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        with self._cond:
            return {w: state for w, (expires, state) in self._states.items() if expires > now}

    def state_history(self, worker: str, limit: int = STATE_HISTORY) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._history[worker])[-limit:]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
