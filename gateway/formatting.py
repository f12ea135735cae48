"""Response bodies and Server-Sent Event chunks in the shapes OpenAI's clients expect."""

from __future__ import annotations

import json
import time
from typing import Any

from wire.protocol import GenerationRequest, RequestKind

# vLLM says "abort" when a request was cut short; OpenAI has no such reason.
_FINISH_REASONS = {"stop": "stop", "length": "length"}


def finish_reason(engine_reason: str) -> str:
    return _FINISH_REASONS.get(engine_reason, "stop")


def usage_body(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's usage object, plus Parity's KV memory-time (extra fields clients ignore)."""
    prompt, output = int(usage["prompt_tokens"]), int(usage["output_tokens"])
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": int(usage["cached_tokens"])},
        "kv_gib_seconds": float(usage["kv_gib_seconds"]),
        "kv_block_seconds": float(usage["kv_block_seconds"]),
    }


def usage_so_far(prompt_tokens: int, output_tokens: int) -> dict[str, int]:
    """A streamed chunk's usage (vLLM's `continuous_usage_stats`)."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": prompt_tokens + output_tokens,
    }


def _head(request: GenerationRequest, obj: str, created: int) -> dict[str, Any]:
    return {"id": request.request_id, "object": obj, "created": created, "model": request.model}


def complete_body(
    request: GenerationRequest, text: str, engine_reason: str, usage: dict[str, Any]
) -> dict[str, Any]:
    created = int(request.received_at)
    reason = finish_reason(engine_reason)
    if request.kind is RequestKind.CHAT:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": reason,
            "logprobs": None,
        }
        body = _head(request, "chat.completion", created)
    else:
        choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
        body = _head(request, "text_completion", created)
    return {**body, "choices": [choice], "usage": usage_body(usage)}


def chunk(
    request: GenerationRequest, text: str | None, reason: str | None, *, first: bool = False
) -> dict[str, Any]:
    created = int(request.received_at)
    if request.kind is RequestKind.CHAT:
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if text is not None:
            delta["content"] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": reason}
        return {**_head(request, "chat.completion.chunk", created), "choices": [choice]}
    choice = {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}
    return {**_head(request, "text_completion", created), "choices": [choice]}


def usage_chunk(request: GenerationRequest, usage: dict[str, Any]) -> dict[str, Any]:
    obj = "chat.completion.chunk" if request.kind is RequestKind.CHAT else "text_completion"
    head = _head(request, obj, int(request.received_at))
    return {**head, "choices": [], "usage": usage_body(usage)}


def sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


KEEPALIVE = b": keep-alive\n\n"
DONE = sse("[DONE]")


def model_card(name: str, max_model_len: int) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "parity",
        "max_model_len": max_model_len,
    }
