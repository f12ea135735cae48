"""Small factories with keyword defaults for scheduler_core tests."""

from __future__ import annotations

from typing import Any

from scheduler_core.job import Job
from scheduler_core.sim.profiles import EngineProfile, ReservePolicy

_counter = {"n": 0}


def make_job(
    request_id: str | None = None,
    tenant: str = "alice",
    arrival_s: float = 0.0,
    prompt_tokens: int = 10,
    max_tokens: int = 10,
    output_tokens: int | None = None,
    app: str | None = None,
) -> Job:
    if request_id is None:
        _counter["n"] += 1
        request_id = f"job-{_counter['n']}"
    return Job(request_id, tenant, arrival_s, prompt_tokens, max_tokens, output_tokens, app)


def make_profile(**overrides: Any) -> EngineProfile:
    """A toy engine: every step takes exactly 1 s, 10 blocks of 16 tokens."""
    fields: dict[str, Any] = {
        "name": "toy",
        "num_kv_tokens": 160,
        "step_base_s": 1.0,
        "step_per_prefill_token_s": 0.0,
        "step_per_seq_s": 0.0,
        "step_per_kv_token_s": 0.0,
        "reserve": ReservePolicy.WORST_CASE,
        "source": "test",
        "block_size": 16,
        "max_num_seqs": 4,
        "max_num_batched_tokens": 64,
        **overrides,
    }
    return EngineProfile(**fields)
