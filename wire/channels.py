"""The fast lanes between the API and the engine pool, apart from the broker.

- event streams: the worker publishes a request's tokens to the gateway that holds it,
  which relays them (SSE);
- aborts: the API asks, the worker that holds the request cancels it in the engine;
- once-only markers: delivery attempts and "usage recorded" per request id;
- run claims and restart decisions (`wire/runs.py`);
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
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from wire.runs import LocalRuns, Runs

Event = dict[str, Any]
STATE_TTL_S = 5.0
STATE_HISTORY = 3600  # about an hour of one-second states


class StreamUnreadable(RuntimeError):
    """The gateway has not been able to read its inbox for a while (Redis is unreachable):
    its requests' events may be arriving nowhere, so their streams end with an error
    instead of waiting out the request timeout."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a worker needs to know as it takes a request: which attempt this is, whether
    an earlier one already served and billed it, and whether its client already left."""

    attempt: int
    done: bool
    aborted: bool


class Channels(Runs, ABC):
    """Contract shared by the Redis and in-process implementations."""

    # -- event streams: the worker publishes, the gateway receives -----------------
    @abstractmethod
    def publish(self, request_id: str, event: Event, reply_to: str = "") -> None:
        """Send an event of the request to its gateway (`reply_to`, from `expect`). Never
        blocks on the network."""

    def flush(self) -> None:  # noqa: B027 - in-process channels have nothing to flush
        """Wait until every published event is readable."""

    @abstractmethod
    def expect(self, request_id: str) -> str:
        """Start collecting the request's events on the running event loop; returns the
        reply address its worker must publish them to."""

    @abstractmethod
    async def receive(self, request_id: str, timeout_s: float) -> list[Event]:
        """The request's events since the last call, in order; waits up to `timeout_s`
        for one, without holding a thread."""

    def event_outages(self) -> int:
        """How many times this event loop's inbox could not be read (0 in process): events
        may have been lost only across one of these."""
        return 0

    @abstractmethod
    def forget(self, request_id: str) -> None:
        """Stop collecting the request's events: it ended, or its client left."""

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
    def begin(self, request_id: str) -> Delivery:
        """A delivery of the request starts (one round trip where the store is remote)."""
        return Delivery(
            attempt=self.next_attempt(request_id),
            done=self.is_done(request_id),
            aborted=self.abort_requested(request_id),
        )

    @abstractmethod
    def next_attempt(self, request_id: str) -> int:
        """1 for the first delivery of a request, 2 for the next, and so on."""

    @abstractmethod
    def finish(self, request_id: str, event: Event, reply_to: str = "") -> Future[None]:
        """Send the request's `done` event (its usage is recorded) and mark it done, both in
        one step, after every event published before it. A worker killed at any moment
        leaves the request either finished and answered or neither (then it is delivered
        again, served again and billed once, by the store's one row per request id); never
        marked done with its answer lost. The future resolves once both are stored."""

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


class LocalChannels(LocalRuns, Channels):
    """Everything in this process's memory, guarded by one condition variable."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self._clock = clock
        self._cond = threading.Condition()
        self._streams: dict[str, list[Event]] = defaultdict(list)
        self._cursors: dict[str, int] = {}
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

    def publish(self, request_id: str, event: Event, reply_to: str = "") -> None:
        with self._cond:
            if request_id not in self._cursors:
                return  # nobody expects it (any more): as a gateway's inbox drops it
            self._streams[request_id].append(event)
            readers = self._async_readers.pop(request_id, [])
        for loop, future in readers:
            loop.call_soon_threadsafe(_wake, future)

    def expect(self, request_id: str) -> str:
        with self._cond:
            self._cursors[request_id] = 0
        return ""  # one process: every event is at hand

    async def receive(self, request_id: str, timeout_s: float) -> list[Event]:
        loop = asyncio.get_running_loop()
        with self._cond:
            events = self._take(request_id)
            if not events:
                future: asyncio.Future[None] = loop.create_future()
                self._async_readers[request_id].append((loop, future))
        if not events:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await future
            with self._cond:
                events = self._take(request_id)
        return events

    def _take(self, request_id: str) -> list[Event]:
        start = self._cursors.get(request_id, 0)
        events = self._streams[request_id][start:]
        self._cursors[request_id] = start + len(events)
        return events

    def forget(self, request_id: str) -> None:
        with self._cond:
            self._streams.pop(request_id, None)
            self._cursors.pop(request_id, None)
            self._async_readers.pop(request_id, None)

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

    def finish(self, request_id: str, event: Event, reply_to: str = "") -> Future[None]:
        with self._cond:  # readers see the event and the mark together
            self._done.add(request_id)
            self.publish(request_id, event, reply_to)
        finished: Future[None] = Future()
        finished.set_result(None)
        return finished

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
