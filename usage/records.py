"""What one request cost: the record the engine reports and the usage sink stores.

Plain dataclasses with no Django and no vLLM, because both sides of the worker
use them: the fair scheduler inside vLLM's engine-core process measures the
scheduler part (`SchedulerUsage`), the worker adds timings it alone can see and
writes the whole (`RequestUsage`) once per request.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from typing import Any


class UsageStatus(enum.StrEnum):
    """How a request ended. Every ending is billed for the work actually done."""

    FINISHED = "finished"  # stopped on its own: stop token, stop string or max_tokens
    ABORTED = "aborted"  # the client went away, or the worker was told to cancel
    ERROR = "error"  # the engine refused or failed it (e.g. prompt longer than the model)


@dataclass(slots=True)
class SchedulerUsage:
    """What the fair scheduler measured for one request, reported once when it ends.

    `prompt_tokens` counts prompt tokens the engine computed (chunked prefill,
    recomputation after preemption included); `cached_tokens` those a prefix-cache
    hit spared it. KV memory is the integral of blocks held over engine steps
    (`kv_block_steps`) and over wall time (`kv_block_seconds`, `kv_gib_seconds`).
    """

    request_id: str
    tenant: str
    app: str | None = None
    num_prompt_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    kv_block_steps: int = 0
    kv_block_seconds: float = 0.0
    kv_gib_seconds: float = 0.0
    peak_blocks: int = 0
    preemptions: int = 0
    queue_s: float = 0.0
    status: UsageStatus = UsageStatus.FINISHED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SchedulerUsage:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["status"] = UsageStatus(values.get("status", UsageStatus.FINISHED))
        return cls(**values)


@dataclass(slots=True)
class RequestUsage:
    """One request's usage row: written exactly once per `request_id`.

    Token counts are what the client is billed for: `prompt_tokens` is the
    prompt's length (each prompt token billed once, however often it was
    recomputed), `cached_tokens` the part of it served from the prefix cache.
    Times are seconds; `finished_at` is a Unix timestamp.
    """

    request_id: str
    tenant: str
    tenant_id: int
    api_key_id: int | None
    model: str
    app: str | None
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    kv_block_seconds: float
    kv_gib_seconds: float
    peak_blocks: int
    preemptions: int
    queue_s: float
    ttft_s: float | None
    latency_s: float
    status: UsageStatus
    finished_at: float

    def __post_init__(self) -> None:
        counts = (self.prompt_tokens, self.cached_tokens, self.output_tokens, self.peak_blocks)
        if min(counts) < 0 or self.preemptions < 0:
            raise ValueError(f"request {self.request_id}: usage counts must be >= 0")
        if self.cached_tokens > self.prompt_tokens:
            raise ValueError(f"request {self.request_id}: cached_tokens exceeds prompt_tokens")

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestUsage:
        values = dict(data)
        values["status"] = UsageStatus(values["status"])
        return cls(**values)


def printable_text(text: str) -> bool:
    """Text a usage row can carry into any store and any export: encodable as UTF-8 (no
    lone surrogate) and free of control characters (no NUL, which PostgreSQL refuses)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return all(unicodedata.category(c) not in ("Cc", "Cs") for c in text)


# Rollups: what the usage sink adds up per minute. Pure Python, so the in-memory store and the
# database store roll up with the very same arithmetic.

GIB_SECONDS_QUANTUM = Decimal("1e-9")  # the scale of the kv_gib_seconds columns


def to_ms(seconds: float) -> int:
    """Whole milliseconds; a negative duration (clock skew between processes) counts as 0."""
    return max(0, round(seconds * 1000))


def gib_seconds(value: float) -> Decimal:
    """The billed KV GiB-seconds as a Decimal at the column's scale.

    Through repr, the float's shortest round-tripping form, so 0.1 becomes Decimal("0.1") and
    not the binary expansion 0.1000000000000000055...
    """
    return Decimal(repr(value)).quantize(GIB_SECONDS_QUANTUM)


def minute_start(timestamp: float) -> int:
    """The Unix time (seconds, UTC) of the start of the minute holding `timestamp`."""
    return int(timestamp // 60) * 60


@dataclass(frozen=True, slots=True, order=True)
class MinuteKey:
    """One rollup row's identity. No field is None, so the database's unique key has no NULL."""

    minute: int  # Unix seconds at the start of the minute, UTC
    tenant_id: int
    api_key_id: int  # 0: the request used no key
    model: str
    app: str  # '': the request named no application

    @classmethod
    def of(cls, usage: RequestUsage) -> MinuteKey:
        return cls(
            minute_start(usage.finished_at),
            usage.tenant_id,
            usage.api_key_id or 0,
            usage.model,
            usage.app or "",
        )


@dataclass(slots=True)
class MinuteTotals:
    """The sums one rollup row holds; `add` is the only way a request enters them."""

    num_requests: int = 0
    num_aborted: int = 0
    num_errors: int = 0
    num_with_ttft: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    kv_block_seconds: float = 0.0
    kv_gib_seconds: Decimal = field(default_factory=Decimal)
    preemptions: int = 0
    queue_ms_sum: int = 0
    ttft_ms_sum: int = 0
    latency_ms_sum: int = 0

    def add(self, usage: RequestUsage) -> None:
        self.num_requests += 1
        self.num_aborted += usage.status == UsageStatus.ABORTED
        self.num_errors += usage.status == UsageStatus.ERROR
        self.prompt_tokens += usage.prompt_tokens
        self.cached_tokens += usage.cached_tokens
        self.output_tokens += usage.output_tokens
        self.kv_block_seconds += usage.kv_block_seconds
        self.kv_gib_seconds += gib_seconds(usage.kv_gib_seconds)
        self.preemptions += usage.preemptions
        self.queue_ms_sum += to_ms(usage.queue_s)
        self.latency_ms_sum += to_ms(usage.latency_s)
        if usage.ttft_s is not None:
            self.num_with_ttft += 1
            self.ttft_ms_sum += to_ms(usage.ttft_s)

    def merge(self, other: MinuteTotals) -> None:
        for name in MINUTE_SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


MINUTE_SUMS: tuple[str, ...] = tuple(f.name for f in fields(MinuteTotals))


def roll_up(batch: Iterable[RequestUsage]) -> dict[MinuteKey, MinuteTotals]:
    """Per-minute totals of `batch`, one entry per key, in key order (a stable lock order)."""
    totals: dict[MinuteKey, MinuteTotals] = {}
    for usage in batch:
        totals.setdefault(MinuteKey.of(usage), MinuteTotals()).add(usage)
    return dict(sorted(totals.items()))


def dedupe(batch: Iterable[RequestUsage]) -> list[RequestUsage]:
    """`batch` with each request id once (its first occurrence), in order."""
    first: dict[str, RequestUsage] = {}
    for usage in batch:
        first.setdefault(usage.request_id, usage)
    return list(first.values())
