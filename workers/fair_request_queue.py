"""vLLM's waiting queue, ordered by a Parity `FairPolicy` instead of arrival.

`FairRequestQueue` is a vLLM `RequestQueue` backed by a `scheduler_core.FairQueue`:
the FairQueue holds one `Job` per waiting request and the policy picks the tenant;
this class keeps the `request_id -> Request` map that turns jobs back into requests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from vllm.v1.core.sched.request_queue import RequestQueue
from vllm.v1.request import Request

from scheduler_core import Admission, FairPolicy, FairQueue, Job

DEFAULT_TENANT = "default"


def _extra_args(request: Request) -> dict[str, Any]:
    params = request.sampling_params
    extra = None if params is None else params.extra_args
    return extra if isinstance(extra, dict) else {}


def tenant_of(request: Request) -> str:
    """`sampling_params.extra_args["tenant"]` (vLLM's OpenAI server: `vllm_xargs`).

    Never derived from the request id: ids are chosen by clients and frontends.
    """
    tenant = _extra_args(request).get("tenant")
    if tenant is None or tenant == "":
        return DEFAULT_TENANT
    return str(tenant)


def app_of(request: Request) -> str | None:
    app = _extra_args(request).get("app")
    return None if app is None or app == "" else str(app)


def report_id_of(request: Request) -> str:
    """The id usage is reported under: the caller's, from `extra_args["request_id"]`.

    vLLM's front end appends a random suffix to every request id before the engine core
    sees it, so a worker could not match a report by `request.request_id`.
    """
    report_id = _extra_args(request).get("request_id")
    return request.request_id if report_id is None or report_id == "" else str(report_id)


def make_job(request: Request, arrival_s: float) -> Job:
    """The policy's view of a request: who asked, how long a prompt, how many tokens at most."""
    return Job(
        request_id=request.request_id,
        tenant=tenant_of(request),
        arrival_s=arrival_s,
        prompt_tokens=max(1, request.num_prompt_tokens),
        max_tokens=max(1, request.max_tokens),
        app=app_of(request),
    )


class FairRequestQueue(RequestQueue):
    """Waiting requests in the order a `FairPolicy` serves them.

    What vLLM's schedule loop needs, and how it is met:
    - `peek_request` then `pop_request` return the same object: FairQueue's pop
      returns the job its peek returned, and nothing is billed in between.
    - `prepend_request(s)` put preempted or skipped requests back at the head of their
      tenant's FIFO; they are not new demand (no arrival, no counter lift). vLLM's FCFS
      queue prepends with `extendleft`, so the *last* request given ends up first; this
      queue keeps that contract, which is what restores the original order.
    - `remove_request(s)` ignore requests the queue does not hold (vLLM removes the
      same list from both of its waiting queues).
    - `len` is exact.

    Arrivals are queued in arrears: `add_request` only notes the request and its
    arrival time (it runs on the engine's input path, once per request); the policy
    hears of them, in arrival order, the next time anything reads the queue's order
    (in practice the next `schedule()`). Counters move only inside steps, so a lift
    computed then is the one computed at arrival.

    `job_of` supplies the (single, long-lived) `Job` of a request; `on_pop` is told of
    every pop (vLLM pops both to admit and to skip a request). A request the policy
    rejects on arrival (e.g. RPM over its limit) is not queued but kept in
    `rejected` for the scheduler to finish.
    """

    def __init__(
        self,
        policy: FairPolicy,
        *,
        job_of: Callable[[Request, float], Job],
        clock: Callable[[], float],
        on_pop: Callable[[Request], None] | None = None,
    ) -> None:
        self._fair_queue = FairQueue(policy)
        self.rejected: list[Request] = []
        self._arrivals: list[tuple[Request, float]] = []
        self._requests: dict[str, Request] = {}
        self._job_of = job_of
        self.clock = clock
        self._on_pop = on_pop

    @property
    def fair_queue(self) -> FairQueue:
        """The queue of jobs, with every arrival so far in it."""
        if self._arrivals:
            self._enqueue_arrivals()
        return self._fair_queue

    def add_request(self, request: Request) -> None:
        self._arrivals.append((request, self.clock()))

    def pop_request(self) -> Request:
        job = self.fair_queue.pop()  # IndexError when empty, as vLLM's queues do
        request = self._requests.pop(job.request_id)
        if self._on_pop is not None:
            self._on_pop(request)
        return request

    def peek_request(self) -> Request:
        job = self.fair_queue.peek()
        if job is None:
            raise IndexError("peek from an empty queue")
        return self._requests[job.request_id]

    def prepend_request(self, request: Request) -> None:
        self.fair_queue.prepend(self._job_of(request, self.clock()))
        self._requests[request.request_id] = request

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        ordered = list(requests)
        ordered.reverse()  # FCFS's extendleft semantics: the last given comes out first
        now = self.clock()
        self.fair_queue.prepend_all(self._job_of(request, now) for request in ordered)
        for request in ordered:
            self._requests[request.request_id] = request

    def remove_request(self, request: Request) -> None:
        if self.fair_queue.remove(request.request_id) is not None:
            del self._requests[request.request_id]

    def remove_requests(self, requests: Iterable[Request]) -> None:
        for request in requests:
            self.remove_request(request)

    def __contains__(self, request: object) -> bool:
        if self._arrivals:
            self._enqueue_arrivals()
        return isinstance(request, Request) and request.request_id in self._requests

    def __bool__(self) -> bool:
        return bool(self._arrivals) or bool(self._fair_queue)

    def __len__(self) -> int:
        # Arrivals the policy has yet to see count: one it will reject is still unfinished.
        return len(self._fair_queue) + len(self._arrivals)

    def __iter__(self) -> Iterator[Request]:
        """Waiting requests in service order (assuming no further charges)."""
        return (self._requests[job.request_id] for job in self.fair_queue)

    def num_waiting(self, tenant: str) -> int:
        return self.fair_queue.num_waiting(tenant)

    def take_rejected(self) -> list[Request]:
        if self._arrivals:
            self._enqueue_arrivals()
        rejected, self.rejected = self.rejected, []
        return rejected

    def _enqueue_arrivals(self) -> None:
        arrivals, self._arrivals = self._arrivals, []
        push = self._fair_queue.push
        for request, arrival_s in arrivals:
            if push(self._job_of(request, arrival_s), arrival_s) is Admission.REJECTED:
                self.rejected.append(request)
            else:
                self._requests[request.request_id] = request
