"""How a worker builds its engine, and how one of our requests becomes vLLM's sampling
parameters: the two places where Parity's settings meet vLLM's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wire.protocol import GenerationRequest

SCHEDULER_CLS = "workers.vllm_scheduler.FairScheduler"


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
    engine_nice: int = 0  # added to the engine processes' niceness (`lower_engine_priority`)

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


def sampling_params(request: GenerationRequest, max_tokens: int, kind: Any) -> Any:
    """vLLM's sampling parameters for one of our requests."""
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
