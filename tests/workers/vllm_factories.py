"""Factories that drive vLLM's real `Scheduler` machinery with `FairScheduler`, no engine.

A `VllmConfig` on the tiny local model, a `KVCacheConfig` with one full-attention
group, `Request`s with the tenant in `SamplingParams.extra_args`, and hand-made
`ModelRunnerOutput`s: one sampled token per request that finished its prefill.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from vllm import SamplingParams
from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
from vllm.utils.hashing import sha256
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine import EngineCoreOutputs
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import Request
from vllm.v1.structured_output import StructuredOutputManager

from usage.records import SchedulerUsage
from workers.vllm_scheduler import FairScheduler

BLOCK_SIZE = 16
NUM_LAYERS = 2
NUM_KV_HEADS = 2
HEAD_SIZE = 32
SAMPLED_TOKEN = 10  # an ordinary character, never EOS
_request_ids = itertools.count()


@dataclass(slots=True)
class ManualClock:
    """The scheduler's clock, moved by hand."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@functools.cache
def model_config(model_dir: str, max_model_len: int = 512) -> ModelConfig:
    # Building a ModelConfig inspects the model (about 10 s): once per session.
    return ModelConfig(model=model_dir, dtype="float32", max_model_len=max_model_len, seed=0)


def make_vllm_config(
    model_dir: Path,
    *,
    max_num_seqs: int = 8,
    max_num_batched_tokens: int = 256,
    enable_chunked_prefill: bool = True,
    enable_prefix_caching: bool = False,
    async_scheduling: bool = False,
    num_blocks: int = 1000,
) -> VllmConfig:
    model = model_config(str(model_dir))
    scheduler = SchedulerConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_model_len=model.max_model_len,
        enable_chunked_prefill=enable_chunked_prefill,
        is_encoder_decoder=False,
    )
    cache = CacheConfig(block_size=BLOCK_SIZE, enable_prefix_caching=enable_prefix_caching)
    config = VllmConfig(model_config=model, scheduler_config=scheduler, cache_config=cache)
    config.cache_config.num_gpu_blocks = num_blocks
    # The CPU platform turns async scheduling off; a GPU deployment may keep it on.
    config.scheduler_config.async_scheduling = async_scheduling
    return config


def make_kv_cache_config(num_blocks: int) -> KVCacheConfig:
    spec = FullAttentionSpec(
        block_size=BLOCK_SIZE, num_kv_heads=NUM_KV_HEADS, head_size=HEAD_SIZE, dtype=torch.float32
    )
    layers = [f"model.layers.{i}.self_attn.attn" for i in range(NUM_LAYERS)]
    return KVCacheConfig(
        num_blocks=num_blocks, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(layers, spec)]
    )


def make_vllm_scheduler(
    cls: type[Scheduler], model_dir: Path, *, num_blocks: int = 1000, **config_options: int | bool
) -> Scheduler:
    """vLLM's own `cls` (Scheduler or AsyncScheduler), built as `make_scheduler` builds ours."""
    config = make_vllm_config(model_dir, num_blocks=num_blocks, **config_options)  # type: ignore[arg-type]
    return cls(
        vllm_config=config,
        kv_cache_config=make_kv_cache_config(num_blocks),
        structured_output_manager=StructuredOutputManager(config),
        block_size=BLOCK_SIZE,
    )


def make_scheduler(
    model_dir: Path,
    *,
    num_blocks: int = 1000,
    weights: dict[str, float] | None = None,
    **config_options: int | bool,
) -> FairScheduler:
    """A FairScheduler on a manual clock that keeps every usage record in `.usage_log`."""
    config = make_vllm_config(model_dir, num_blocks=num_blocks, **config_options)  # type: ignore[arg-type]
    scheduler = FairScheduler(
        vllm_config=config,
        kv_cache_config=make_kv_cache_config(num_blocks),
        structured_output_manager=StructuredOutputManager(config),
        block_size=BLOCK_SIZE,
    )
    scheduler.clock = ManualClock()
    scheduler.wall_clock = lambda: 1_700_000_000.0
    usage_log: list[SchedulerUsage] = []
    scheduler.on_usage = usage_log.append
    scheduler.usage_log = usage_log  # type: ignore[attr-defined]
    for tenant, weight in (weights or {}).items():
        scheduler.set_weight(tenant, weight)
    return scheduler


@functools.cache
def _block_hasher() -> object:
    init_none_hash(sha256)
    return get_request_block_hasher(BLOCK_SIZE, sha256)


def make_request(
    request_id: str | None = None,
    *,
    tenant: str | None = "acme",
    app: str | None = None,
    prompt_tokens: int = 32,
    prompt_token_ids: Sequence[int] | None = None,
    max_tokens: int = 16,
    hashed: bool = False,
) -> Request:
    """A request of `tenant` (None: no extra_args at all); `hashed` enables prefix caching."""
    extra_args = {} if tenant is None else {"tenant": tenant}
    if app is not None:
        extra_args["app"] = app
    ids = list(prompt_token_ids) if prompt_token_ids is not None else [7] * prompt_tokens
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, extra_args=extra_args or None)
    return Request(
        request_id=request_id or f"req-{next(_request_ids)}",
        prompt_token_ids=ids,
        sampling_params=params,
        pooling_params=None,
        block_hasher=_block_hasher() if hashed else None,  # type: ignore[arg-type]
    )


def make_requests(count: int, **options: object) -> list[Request]:
    tenant = options.get("tenant", "acme")
    return [make_request(f"{tenant}-{i}", **options) for i in range(count)]  # type: ignore[arg-type]


def runner_output(scheduler: FairScheduler, output: SchedulerOutput) -> ModelRunnerOutput:
    """One sampled token for each scheduled request whose prefill is complete."""
    req_ids = list(output.num_scheduled_tokens)
    sampled = []
    for req_id in req_ids:
        request = scheduler.requests[req_id]
        done = request.num_computed_tokens >= request.num_tokens
        sampled.append([SAMPLED_TOKEN] if done else [])
    return ModelRunnerOutput(
        req_ids=req_ids,
        req_id_to_index={req_id: i for i, req_id in enumerate(req_ids)},
        sampled_token_ids=sampled,
    )


def step(scheduler: FairScheduler, *, seconds: float = 0.01) -> SchedulerOutput:
    """One engine step: schedule, 'run the model', feed its output back; time moves on."""
    output = scheduler.schedule()
    scheduler.update_from_output(output, runner_output(scheduler, output))
    clock = scheduler.clock
    if isinstance(clock, ManualClock):
        clock.advance(seconds)
    return output


@dataclass(slots=True)
class ServiceTrace:
    """Per-tenant service (input + 2 x output tokens, as VTC bills it) after each step."""

    service: list[dict[str, float]] = field(default_factory=list)
    backlogged: list[frozenset[str]] = field(default_factory=list)


def service_by_tenant(scheduler: FairScheduler) -> dict[str, float]:
    snapshot = scheduler.fair_policy.snapshot()
    return {t: c["input_tokens"] + 2 * c["output_tokens"] for t, c in snapshot.items()}


def run_steps(
    scheduler: FairScheduler,
    max_steps: int = 10_000,
    *,
    trace: ServiceTrace | None = None,
    seconds: float = 0.01,
) -> int:
    """Step until nothing is left (or `max_steps`); returns the number of steps taken."""
    for num_steps in range(max_steps):
        if not scheduler.has_requests():
            return num_steps
        step(scheduler, seconds=seconds)
        if trace is not None:
            trace.service.append(service_by_tenant(scheduler))
            trace.backlogged.append(frozenset(scheduler.waiting.fair_queue.waiting_tenants()))
    return max_steps


def add_all(scheduler: FairScheduler, requests: Iterable[Request]) -> None:
    for request in requests:
        scheduler.add_request(request)


class Stepper:
    """Steps a scheduler as vLLM's engine core does: synchronously (schedule, then feed
    back that step's output) or, for an `AsyncScheduler`, one step ahead (schedule step
    n+1, then feed back step n's output)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.ahead = isinstance(scheduler, AsyncScheduler)
        self._pending: tuple[SchedulerOutput, ModelRunnerOutput] | None = None

    def step(self) -> tuple[SchedulerOutput, dict[int, EngineCoreOutputs]]:
        """One step: what was scheduled, and the outputs fed back in it."""
        scheduler = self.scheduler
        output = scheduler.schedule()
        produced = runner_output(scheduler, output)  # type: ignore[arg-type]
        fed: tuple[SchedulerOutput, ModelRunnerOutput] | None = (output, produced)
        if self.ahead:  # an empty step runs nothing: nothing of it comes back later
            ran = (output, produced) if output.total_num_scheduled_tokens else None
            fed, self._pending = self._pending, ran
        engine_outputs = {} if fed is None else scheduler.update_from_output(*fed)
        return output, engine_outputs

    def done(self) -> bool:
        return self._pending is None and not self.scheduler.has_requests()

    def finish_pending(self) -> dict[int, EngineCoreOutputs]:
        """Feed back the output still in flight (the last step scheduled ahead)."""
        fed, self._pending = self._pending, None
        return {} if fed is None else self.scheduler.update_from_output(*fed)
