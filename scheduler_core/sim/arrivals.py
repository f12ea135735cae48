"""Requests that have not arrived yet: the workload's, and calls released later.

Calls of an application arrive when their parents finish (plus a think or
tool delay), so the arrival stream grows while the simulation runs.
`AppTracker` knows each application's dependency graph and releases calls;
`ArrivalQueue` hands arrivals out in time order.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence

from scheduler_core.apps import AppInfo, Application, call_id
from scheduler_core.job import Job


class ArrivalQueue:
    """Jobs by arrival time; equal times in the order they were given."""

    __slots__ = ("_heap", "_seqs")

    def __init__(self, jobs: Iterable[Job] = ()) -> None:
        self._seqs = itertools.count()
        self._heap = [(job.arrival_s, next(self._seqs), job) for job in jobs]
        heapq.heapify(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def next_time(self) -> float:
        return self._heap[0][0]

    def push(self, job: Job) -> None:
        heapq.heappush(self._heap, (job.arrival_s, next(self._seqs), job))

    def pop_due(self, now: float) -> list[Job]:
        """Every job that has arrived by `now`, in arrival order."""
        heap, due = self._heap, []
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        return due


class AppTracker:
    """The applications of a run: their root calls, announcements and releases."""

    __slots__ = ("_apps", "_parents_left", "_children", "_announced", "_call_of")

    def __init__(self, apps: Sequence[Application]) -> None:
        self._apps = {app.app_id: app for app in apps}
        if len(self._apps) != len(apps):
            raise ValueError("application ids must be unique")
        self._parents_left: dict[str, list[int]] = {}
        self._children: dict[str, list[list[int]]] = {}
        self._announced: set[str] = set()
        self._call_of: dict[str, int] = {}  # request id -> call index
        for app in apps:
            children: list[list[int]] = [[] for _ in app.calls]
            for call in app.calls:
                self._call_of[call_id(app.app_id, call.index)] = call.index
                for parent in call.parents:
                    children[parent].append(call.index)
            self._children[app.app_id] = children
            self._parents_left[app.app_id] = [len(call.parents) for call in app.calls]

    def roots(self) -> list[Job]:
        return [app.job(call, app.arrival_s) for app in self._apps.values() for call in app.roots]

    def all_calls(self) -> list[Job]:
        """Every call as a job (at the application's arrival), for validation."""
        return [job for app in self._apps.values() for job in app.jobs()]

    def announce(self, job: Job) -> AppInfo | None:
        """The application's `AppInfo` the first time one of its calls arrives."""
        app = None if job.app is None else self._apps.get(job.app)
        if app is None or app.app_id in self._announced:
            return None
        self._announced.add(app.app_id)
        return app.info()

    def finished(self, job: Job, now: float) -> list[Job]:
        """The calls that `job`'s finish makes ready, arriving after their delay."""
        app = None if job.app is None else self._apps.get(job.app)
        index = self._call_of.get(job.request_id)
        if app is None or index is None:
            return []
        left = self._parents_left[app.app_id]
        released = []
        for child in self._children[app.app_id][index]:
            left[child] -= 1
            if left[child] == 0:
                call = app.calls[child]
                released.append(app.job(call, now + call.delay_s))
        return released
