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
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from wire.channels import Channels
from wire.gate import Gate
from wire.protocol import GenerationRequest, delta_event, done_event, error_event, start_event
from workers.accounting import RequestUsage, SchedulerUsage, UsageStatus
from workers.control import ControlServer
from workers.progress import Progress, build_usage, engine_error_status
from workers.prompts import PromptError, Tokenizer
from workers.tenant_directory import TenantDirectory
from workers.usage_sink import UsageSink

logger = logging.getLogger(__name__)

SCHEDULER_CLS = "workers.vllm_scheduler.FairScheduler"
# The scheduler reports a request's usage just before its last tokens reach us; this is
# how long to wait for a report that got delayed (it is never dropped on the way).
USAGE_REPORT_WAIT_S = 10.0
STATE_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How to build the engine; validated where it is read (Django settings or the CLI)."""

    model_path: str
    model_name: str
    max_model_len: int
    max_num_seqs: int
    kv_cache_bytes: int  # 0: let vLLM size the cache from gpu_memory_utilization (GPU)
    policy: str
    slots: int
    dtype: str = "auto"
    enforce_eager: bool = True
    engine_nice: int = 0  # added to the engine processes' niceness (see `_lower_engine`)

    def engine_args(self) -> Any:
        from vllm import AsyncEngineArgs

        return AsyncEngineArgs(
            model=self.model_path,
            served_model_name=[self.model_name],
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            max_num_seqs=self.max_num_seqs,
            kv_cache_memory_bytes=self.kv_cache_bytes or None,
            enforce_eager=self.enforce_eager,
            enable_prefix_caching=True,
            scheduler_cls=SCHEDULER_CLS,
            disable_log_stats=True,
        )


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
        os.environ["PARITY_POLICY"] = self.settings.policy
        self._tokenizer = Tokenizer(self.settings.model_path, self.settings.max_model_len)
        asyncio.run_coroutine_threadsafe(self._build_engine(), self._loop).result()
        self._lower_engine()
        self.sink.start()
        self.directory.subscribe(lambda weights: self._on_weights())
        self.channels.listen_aborts(self._on_abort)
        self._join_pool()
        threading.Thread(target=self._state_loop, name="engine-state", daemon=True).start()
        logger.info("engine for %s is serving (%s)", self.settings.model_name, self.worker_name)

    async def _build_engine(self) -> None:
        from vllm.v1.engine.async_llm import AsyncLLM

        self._engine = AsyncLLM.from_engine_args(self.settings.engine_args())

    def _lower_engine(self) -> None:
        """Put the engine's processes below this one. They busy-poll while they wait; at
        equal priority on a machine with few cores, admitting a request and relaying its
        tokens would wait behind that polling (ENGINE_NOTES: "Busy polling")."""
        import psutil

        if self.settings.engine_nice <= 0:
            return
        for child in psutil.Process().children(recursive=True):
            try:
                child.nice(
                    max(
                        child.nice(), os.getpriority(os.PRIO_PROCESS, 0) + self.settings.engine_nice
                    )
                )
            except psutil.Error:
                logger.warning("could not lower the priority of engine process %s", child.pid)

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
            return "duplicate"  # an earlier delivery already served and billed it
        assert self._tokenizer is not None, "EngineHost.start() was not called"
        try:
            prompt_ids = self._tokenizer.encode(request)
        except PromptError as exc:
            self._send(request, error_event(400, exc.code, str(exc), exc.param))
            return "rejected"
        # `start` tells the API the request is accepted, so it can open an SSE stream.
        self._send(request, start_event(delivery.attempt))
        if delivery.aborted:
            # The client left before the engine saw the request: nothing was computed.
            usage = self._record(request, len(prompt_ids), Progress(), None, UsageStatus.ABORTED)
            self._send(request, done_event("abort", usage.to_dict()))
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
        except Exception as exc:
            self._usage_waiters.pop(rid, None)
            http_status, code = engine_error_status(exc)
            self._send(request, error_event(http_status, code, str(exc) or code))
            if http_status >= 500:
                raise
            return "rejected"
        report = await self._usage_report(rid)
        status = UsageStatus.ABORTED if progress.finish_reason == "abort" else UsageStatus.FINISHED
        usage = self._record(request, len(prompt_ids), progress, report, status)
        self._send(request, done_event(progress.finish_reason, usage.to_dict()))
        return status.value

    async def _generate(self, request: GenerationRequest, prompt_ids: list[int]) -> Progress:
        from vllm.sampling_params import RequestOutputKind

        rid = request.request_id
        max_tokens = request.max_tokens or self.settings.max_model_len - len(prompt_ids)
        params = self._sampling_params(request, max_tokens, RequestOutputKind.DELTA)
        progress = Progress()
        self._running.add(rid)
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
            self._aborting.discard(rid)
        if not request.stream and progress.num_output_tokens:
            # One event for the whole text: a client that waits for the end needs no more.
            self._send(request, delta_event(progress.text, progress.num_output_tokens))
        return progress

    def _send(self, request: GenerationRequest, event: dict[str, Any]) -> None:
        """An event of the request, to the gateway that holds it."""
        self.channels.publish(request.request_id, event, request.reply_to)

    def _sampling_params(self, request: GenerationRequest, max_tokens: int, kind: Any) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            max_tokens=max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop or None,
            seed=request.seed,
            ignore_eos=request.ignore_eos,
            output_kind=kind,
            # A client that waits for the whole answer needs the first token (for TTFT)
            # and the last: not one output per token through this process's event loop.
            stream_interval=None if request.stream else max_tokens,
            # The tenant travels with the request into the scheduler; vLLM rewrites
            # request ids, so ours travels too, to name the usage report.
            extra_args={
                "tenant": request.tenant,
                "app": request.app,
                "request_id": request.request_id,
            },
        )

    async def _usage_report(self, rid: str) -> SchedulerUsage | None:
        waiter = self._usage_waiters[rid]
        early = self._early_reports.pop(rid, None)
        if early is not None and not waiter.done():
            waiter.set_result(early)
        try:
            return await asyncio.wait_for(waiter, USAGE_REPORT_WAIT_S)
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
        usage = build_usage(request, num_prompt, progress, report, status, self.settings.model_name)
        if self.channels.mark_done(request.request_id):
            try:
                self.sink.record(usage)
            except ValueError:
                # A row the store could never take must not block the others; it is in the
                # log in full, for the operator to bill by hand.
                logger.exception("usage of %s refused: %r", request.request_id, usage)
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
        """Tell the gate this worker is alive, what it holds, and the tenants' weights."""
        try:
            self.gate.heartbeat(self.worker_name, self.settings.slots, self.directory.weights())
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

    def _on_abort(self, request_id: str) -> None:
        if (
            request_id in self._running
            and request_id not in self._aborting
            and self._engine is not None
        ):
            self._aborting.add(request_id)
            logger.info("aborting %s: its client went away", request_id)
            asyncio.run_coroutine_threadsafe(self._engine.abort(request_id), self._loop)

    def _state_loop(self) -> None:
        # A heartbeat: the scheduler reports only while it has work. Also a sweep for
        # aborts whose notification was lost on the way (pub/sub delivers at most once).
        while not self._stopping.wait(STATE_INTERVAL_S):
            self._join_pool()
            self._publish_state()
            self._sweep_aborts()

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
            "weights": self.directory.weights(),
            "scheduler": self._scheduler_state,
            "published_at": time.time(),
        }
