"""Small factories with keyword defaults for the usage sink and tenant directory tests."""

from __future__ import annotations

import itertools
from typing import Any

from tenants.models import ApiKey, Tenant
from usage.records import RequestUsage, UsageStatus

# 2026-09-20 12:00:00 UTC, the start of a minute: rows at T + s stay in one minute for s < 60.
T = 1_789_905_600.0
_ids = itertools.count(1)


def make_usage(request_id: str | None = None, **overrides: Any) -> RequestUsage:
    fields: dict[str, Any] = {
        "request_id": request_id or f"req-{next(_ids)}",
        "tenant": "acme",
        "tenant_id": 1,
        "api_key_id": None,
        "model": "tiny-random",
        "app": None,
        "prompt_tokens": 100,
        "cached_tokens": 20,
        "output_tokens": 50,
        "kv_block_seconds": 1.5,
        "kv_gib_seconds": 0.125,
        "peak_blocks": 8,
        "preemptions": 0,
        "queue_s": 0.010,
        "ttft_s": 0.050,
        "latency_s": 0.500,
        "status": UsageStatus.FINISHED,
        "finished_at": T + 1,
        **overrides,
    }
    return RequestUsage(**fields)


def usage_of(
    tenant: Tenant, request_id: str | None = None, *, key: ApiKey | None = None, **overrides: Any
) -> RequestUsage:
    """A usage row of a real tenant (and key), for the database store."""
    return make_usage(
        request_id,
        tenant=tenant.slug,
        tenant_id=tenant.pk,
        api_key_id=key.pk if key is not None else None,
        **overrides,
    )


def eventually(condition: Any, timeout_s: float = 3.0) -> bool:
    """Poll `condition()` until it is true or `timeout_s` passes (for background threads)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())
