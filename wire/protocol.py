"""What travels between the API and the engine pool: the request, and its event stream.

The API validates and sends a `GenerationRequest` as the Celery task's only argument (a
plain dict, so any broker serializer carries it). The worker answers on the request's
event stream with `start` (one per delivery attempt), `delta` (new text), then exactly
one of `done` (with the usage billed) or `error`. A streamed request's later attempt waits
for its gateway's word before it computes (`wire/runs.py`).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class RequestKind(enum.StrEnum):
    CHAT = "chat"
    COMPLETION = "completion"


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One validated inference request, as the worker receives it."""

    request_id: str
    kind: RequestKind
    tenant: str
    tenant_id: int
    api_key_id: int | None
    model: str
    max_tokens: int | None  # None: up to the end of the model's context
    received_at: float
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    app: str | None = None
    ignore_eos: bool = False  # vLLM's extension: generate exactly max_tokens (load tests)
    stream: bool = True  # False: the text comes in one event at the end, not token by token
    reply_to: str = ""  # the gateway's inbox for the events ("" = one stream of its own)
    # A gate seat backs it, renewed while its gateway lives: the worker aborts it once the
    # seat lapses (the gateway died), instead of computing an answer nobody will read.
    leased: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        return cls(**{**data, "kind": RequestKind(data["kind"])})


class EventType(enum.StrEnum):
    START = "start"
    DELTA = "delta"
    DONE = "done"
    ERROR = "error"


def start_event(attempt: int, prompt_tokens: int) -> dict[str, Any]:
    return {"type": EventType.START.value, "attempt": attempt, "prompt_tokens": prompt_tokens}


def delta_event(text: str, num_tokens: int) -> dict[str, Any]:
    return {"type": EventType.DELTA.value, "text": text, "num_tokens": num_tokens}


def done_event(finish_reason: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {"type": EventType.DONE.value, "finish_reason": finish_reason, "usage": usage}


def error_event(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {
        "type": EventType.ERROR.value,
        "status": status,
        "code": code,
        "message": message,
        "param": param,
    }


def coalesce_deltas(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive `delta` events as one: a reader that fell behind catches up in one write
    (one SSE chunk) instead of one per token."""
    merged: list[dict[str, Any]] = []
    for event in events:
        last = merged[-1] if merged else None
        if last is not None and last["type"] == event["type"] == EventType.DELTA.value:
            merged[-1] = delta_event(
                last["text"] + event["text"], last["num_tokens"] + event["num_tokens"]
            )
        else:
            merged.append(event)
    return merged
