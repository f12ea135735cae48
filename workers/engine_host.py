"""One vLLM engine per worker process, shared by every task thread.

The engine (vLLM's `AsyncLLM`, with `FairScheduler` inside its engine-core process) lives
on one long-lived asyncio loop in a background thread. A Celery task thread hands its
request to that loop and waits; the loop streams tokens to the request's event stream,
collects the scheduler's measurements over the control line, and records the usage once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from usage.records import RequestUsage, SchedulerUsage, UsageStatus
from usage.sink import UsageSink
from wire.channels import Channels
from wire.gate import Gate, served_cost
from wire.protocol import GenerationRequest, delta_event, done_event, error_event, start_event
from wire.runs import GO_ON
from workers.control import ControlServer
from workers.delivery import SeatWatch, restart_decision
from workers.delivery import claim as delivery_claim
from workers.engine_settings import EngineSettings, sampling_params
from workers.lifeline import lower_engine_priority, mark_host
from workers.progress import Progress, build_usage, engine_error_status
from workers.prompts import PromptError, Tokenizer
from workers.tenant_directory import TenantDirectory

logger = logging.getLogger(__name__)

# The scheduler reports a request's usage just before its last tokens reach us; this is
# how long to wait for a report that got delayed (it is never dropped on the way).
USAGE_REPORT_WAIT_S = 10.0
STATE_INTERVAL_S = 1.0


class EngineHost:
    """The worker's engine, its control line, and the request lifecycle around it."""

    def __init__(
        self,
        settings: EngineSettings,
        *,
        channels: Channels,
        gate: Gate,
        sink: UsageSink,
        directory: TenantDirectory,
        worker_name: str | None = None,
    ) -> None:
        self.settings = settings
        self.channels = channels
        self.gate = gate
        self.sink = sink
        self.directory = directory
        self.worker_name = worker_name or f"{socket.gethostname()}:{os.getpid()}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="engine-loop")
        self._engine: Any = None
        self._tokenizer: Tokenizer | None = None
        self._control: ControlServer | None = None
        self._usage_waiters: dict[str, asyncio.Future[SchedulerUsage]] = {}
        self._early_reports: dict[str, SchedulerUsage] = {}
        self._running: set[str] = set()
        self._aborting: set[str] = set()
        self._leased: set[str] = set()  # running requests backed by a gate seat
        self._claims: dict[str, str] = {}  # request id -> this delivery's run claim
        self._superseded: set[str] = set()  # runs another delivery took over
        self._seats = SeatWatch()
        # Seats go back to the gate from here, off the engine's loop (a Redis call each).
        self._gate_calls = ThreadPoolExecutor(1, thread_name_prefix="gate")
        self._scheduler_state: dict[str, Any] = {}
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the loop, the control line and the engine; returns once it serves."""
        self._thread.start()
        address = os.path.join(tempfile.gettempdir(), f"parity-control-{os.getpid()}.sock")
        if os.path.exists(address):
            os.unlink(address)
        self._control = ControlServer(address, self._on_control, self._send_weights)
        self._control.export_env()
        mark_host()
        os.environ["PARITY_POLICY"] = self.settings.policy
        self._tokenizer = Tokenizer(self.settings.model_path, self.settings.max_model_len)
        asyncio.run_coroutine_threadsafe(self._build_engine(), self._loop).result()
        lower_engine_priority(self.settings.engine_nice)
        self.sink.start()
        self.directory.subscribe(lambda weights: self._on_weights())
        self.channels.listen_aborts(self._on_abort)
        self._join_pool()
        threading.Thread(target=self._state_loop, name="engine-state", daemon=True).start()
        logger.info("engine for %s is serving (%s)", self.settings.model_name, self.worker_name)

    async def _build_engine(self) -> None:
        from vllm.v1.engine.async_llm import AsyncLLM

        self._engine = AsyncLLM.from_engine_args(self.settings.engine_args())

    def shutdown(self) -> None:
        """Stop after the running requests: engine, loop, control line, then flush usage."""
        self._stopping.set()
        self._leave_pool()  # no new seats for this worker while it drains
        if self._engine is not None:
            self._engine.shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        if self._control is not None:
            self._control.close()
        self._gate_calls.shutdown(wait=True)
        self.sink.close()
        self.channels.flush()

    @property
    def num_running(self) -> int:
        return len(self._running)

    # -- requests (called from task threads) ------------------------------------------------
    def run(self, request: GenerationRequest) -> str:
        """Serve one request to completion; idempotent across redeliveries.

        Runs on the task's thread: the prompt is tokenized here, off the engine loop.
        """
        delivery = self.channels.begin(request.request_id)
        if delivery.done:
            # An earlier delivery served and billed it. Its worker may have died after the
            # usage was recorded but before the answer reached the gateway: end the stream,
            # so no client waits for an answer that will not come (dropped if it has one).
            message = (
                "The worker that served this request stopped before its answer was sent; retry."
            )
            self._send(request, error_event(502, "answer_lost", message))
            return "duplicate"
        rid = request.request_id
        holder = f"{self.worker_name}#{delivery.attempt}"
        if not delivery_claim(self.channels, rid, holder):
            return "duplicate"  # an earlier delivery, still alive, answered and billed it
        self._claims[rid] = holder
        try:
            return self._run_claimed(request, delivery.attempt, delivery.aborted)
        finally:
            self._claims.pop(rid, None)
            self._superseded.discard(rid)
            self.channels.release_run(rid, holder)

    def _run_claimed(self, request: GenerationRequest, attempt: int, aborted: bool) -> str:
        assert self._tokenizer is not None, "EngineHost.start() was not called"
        try:
            prompt_ids = self._tokenizer.encode(request)
        except PromptError as exc:
            self._send(request, error_event(400, exc.code, str(exc), exc.param))
            return "rejected"
        # `start` tells the API the request is accepted, so it can open an SSE stream.
        self._send(request, start_event(attempt, len(prompt_ids)))
        delivered = GO_ON
        if attempt > 1 and request.stream and not aborted:
            decision = restart_decision(self.channels, request.request_id)
            aborted = decision != GO_ON
            delivered = decision or 0
        if aborted:
            # Nothing computed here: the client left before the engine saw the request, or
            # it received `delivered` tokens from a worker that died (billed as received).
            progress = Progress(num_output_tokens=delivered)
            status = UsageStatus.ABORTED
            usage = self._record(request, len(prompt_ids), progress, None, status)
            self._finish(request, done_event("abort", usage.to_dict())).result()
            return "aborted"
        future: Future[str] = asyncio.run_coroutine_threadsafe(
            self._serve(request, prompt_ids), self._loop
        )
        return future.result()

    async def _serve(self, request: GenerationRequest, prompt_ids: list[int]) -> str:
        rid = request.request_id
        self._usage_waiters[rid] = self._loop.create_future()
        try:
            progress = await self._generate(request, prompt_ids)
            self._give_back_seat(request, len(prompt_ids), progress)
        except Exception as exc:
            self._usage_waiters.pop(rid, None)
            http_status, code = engine_error_status(exc)
            self._send(request, error_event(http_status, code, str(exc) or code))
            if http_status >= 500:
                raise
            return "rejected"
        report = await self._usage_report(rid)
        if rid in self._superseded:
            # Another delivery holds the run now (this worker stalled past its claim's
            # lease): that one answers and bills; this one must do neither.
            logger.warning("%s was taken over by another delivery; dropping this run", rid)
            return "superseded"
        status = UsageStatus.ABORTED if progress.finish_reason == "abort" else UsageStatus.FINISHED
        # Off the loop: the record waits for its fsync, the other streams must not.
        usage = await asyncio.to_thread(
            self._record, request, len(prompt_ids), progress, report, status
        )
        await asyncio.wrap_future(
            self._finish(request, done_event(progress.finish_reason, usage.to_dict()))
        )
        return status.value

    async def _generate(self, request: GenerationRequest, prompt_ids: list[int]) -> Progress:
        from vllm.sampling_params import RequestOutputKind

        rid = request.request_id
        max_tokens = request.max_tokens or self.settings.max_model_len - len(prompt_ids)
        params = sampling_params(request, max_tokens, RequestOutputKind.DELTA)
        progress = Progress()
        self._running.add(rid)
        if request.leased:
            self._leased.add(rid)
        try:
            prompt = {"prompt_token_ids": prompt_ids}
            async for output in self._engine.generate(prompt, params, rid):
                progress.absorb(output)
                completion = output.outputs[0]
                if request.stream and completion.token_ids:
                    event = delta_event(completion.text, len(completion.token_ids))
                    self._send(request, event)
        finally:
            self._running.discard(rid)
            self._leased.discard(rid)
            self._aborting.discard(rid)
        if not request.stream and progress.num_output_tokens:
            # One event for the whole text: a client that waits for the end needs no more.
            self._send(request, delta_event(progress.text, progress.num_output_tokens))
        return progress

    def _give_back_seat(
        self, request: GenerationRequest, num_prompt: int, progress: Progress
    ) -> None:
        """The engine is done with it: its gate seat goes to the next request now, not
        after its usage is stored and its answer has reached the gateway (see
        `Gate.release`). If this fails the gateway gives the seat back at the end."""
        if not request.leased:
            return
        cost = served_cost(num_prompt, progress.num_output_tokens)
        call = self._loop.run_in_executor(
            self._gate_calls, self.gate.release, request.request_id, cost
        )
        call.add_done_callback(_log_failure)

    def _send(self, request: GenerationRequest, event: dict[str, Any]) -> None:
        """An event of the request, to the gateway that holds it."""
        self.channels.publish(request.request_id, event, request.reply_to)

    def _finish(self, request: GenerationRequest, done: dict[str, Any]) -> Future[None]:
        """The request's answer and its done mark, stored together once written: the run
        claim is let go only after that, so a later delivery sees the request done."""
        return self.channels.finish(request.request_id, done, request.reply_to)

    async def _usage_report(self, rid: str) -> SchedulerUsage | None:
        waiter = self._usage_waiters[rid]
        early = self._early_reports.pop(rid, None)
        if early is not None and not waiter.done():
            waiter.set_result(early)
        try:
            async with asyncio.timeout(USAGE_REPORT_WAIT_S):
                return await waiter
        except TimeoutError:
            logger.error("no scheduler report for %s; billing tokens without KV time", rid)
            return None
        finally:
            self._usage_waiters.pop(rid, None)

    def _record(
        self,
        request: GenerationRequest,
        num_prompt: int,
        progress: Progress,
        report: SchedulerUsage | None,
        status: UsageStatus,
    ) -> RequestUsage:
        """Usage on disk first, then (`_finish`) the request marked done: a crash in between
        bills it once (the store keeps one row per request id), never zero times."""
        usage = build_usage(request, num_prompt, progress, report, status, self.settings.model_name)
        self.sink.record(usage)
        return usage

    # -- control line and signals --------------------------------------------------------------
    def _on_control(self, kind: str, body: dict[str, Any]) -> None:
        if kind == "usage":
            report = SchedulerUsage.from_dict(body)
            self._loop.call_soon_threadsafe(self._deliver_report, report)
        elif kind == "state":
            self._scheduler_state = body
            self._publish_state()

    def _deliver_report(self, report: SchedulerUsage) -> None:
        waiter = self._usage_waiters.get(report.request_id)
        if waiter is None:
            self._early_reports[report.request_id] = report
        elif not waiter.done():
            waiter.set_result(report)

    def _on_weights(self) -> None:
        # The engine's scheduler and the pool's gate both weigh tenants: tell both now.
        self._send_weights()
        if not self._stopping.is_set():
            self._join_pool()

    def _join_pool(self) -> None:
        """Tell the gate this worker is alive, what it holds, and the tenants' weights.

        A worker whose usage the database has not taken for a while (an outage) holds
        nothing: it finishes what it runs and takes no more until its log drains."""
        capacity = 0 if self.sink.backlogged else self.settings.slots
        try:
            self.gate.heartbeat(self.worker_name, capacity, self.directory.weights())
        except Exception:  # the gate drops a silent worker; a hiccup must not stop serving
            logger.exception("heartbeat to the gate failed")

    def _leave_pool(self) -> None:
        try:
            self.gate.retire(self.worker_name)
        except Exception:
            logger.exception("leaving the gate failed")

    def _send_weights(self) -> None:
        if self._control is not None:
            self._control.send("weights", self.directory.weights())

    def _on_abort(self, request_id: str, why: str = "its client went away") -> None:
        if (
            request_id in self._running
            and request_id not in self._aborting
            and self._engine is not None
        ):
            self._aborting.add(request_id)
            logger.info("aborting %s: %s", request_id, why)
            asyncio.run_coroutine_threadsafe(self._engine.abort(request_id), self._loop)

    def _state_loop(self) -> None:
        # A heartbeat: the scheduler reports only while it has work. Also a sweep for
        # aborts whose notification was lost on the way (pub/sub delivers at most once).
        while not self._stopping.wait(STATE_INTERVAL_S):
            self._join_pool()
            self._publish_state()
            self._sweep_aborts()
            self._sweep_leases()

    def _sweep_leases(self) -> None:
        """Renew this worker's run claims; stop the runs another delivery took over and
        those whose gate seat lapsed (their gateway died: nobody reads the answer)."""
        try:
            for rid in self.channels.renew_runs(dict(self._claims)):
                self._superseded.add(rid)
                self._on_abort(rid, "another delivery took over its run")
            seatless = self.gate.lapsed(sorted(self._leased))
            for rid in self._seats.orphans(seatless, time.monotonic()):
                self._on_abort(rid, "its gate seat lapsed (its gateway is gone)")
        except Exception:
            logger.exception("renewing run claims and checking seats failed")

    def _sweep_aborts(self) -> None:
        try:
            for request_id in self.channels.aborts_requested(sorted(self._running)):
                self._on_abort(request_id)
        except Exception:
            logger.exception("checking for aborted requests failed")

    def _publish_state(self) -> None:
        try:
            self.channels.publish_state(self.worker_name, self.state())
        except Exception:  # dashboards may go stale; serving must not stop
            logger.exception("publishing live state failed")

    def state(self) -> dict[str, Any]:
        return {
            "worker": self.worker_name,
            "model": self.settings.model_name,
            "policy": self.settings.policy,
            "slots": self.settings.slots,
            "num_in_flight": len(self._running),
            "ready": not self.sink.backlogged,
            "usage_backlog_bytes": self.sink.backlog_bytes,
            "weights": self.directory.weights(),
            "scheduler": self._scheduler_state,
            "published_at": time.time(),
        }


def _log_failure(call: asyncio.Future[None]) -> None:
    if not call.cancelled() and call.exception() is not None:
        logger.warning("giving a seat back early failed", exc_info=call.exception())
