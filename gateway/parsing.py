"""Validating an OpenAI-style request body into a `GenerationRequest`.

Every refusal names the field (`param`), as OpenAI does. Parameters we do not implement
are refused unless they are at their neutral value, so a client never silently gets
something other than what it asked for.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from gateway.errors import OpenAIError, invalid
from usage.records import printable_text
from wire.protocol import GenerationRequest, RequestKind

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MAX_STOP_SEQUENCES = 4
MAX_APP_ID_LENGTH = 100
# No tokenizer we serve packs more characters than this into one token: a longer prompt
# cannot fit the context, whatever its tokens.
MAX_CHARS_PER_TOKEN = 16
_COMMON = frozenset(
    {"model", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream"}
    | {"stream_options", "user", "app", "ignore_eos"}
)
_CHAT = _COMMON | {"messages", "max_completion_tokens"}
_COMPLETION = _COMMON | {"prompt"}
# Accepted only at these neutral values: anything else would be silently ignored.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "presence_penalty": (0, None),
    "frequency_penalty": (0, None),
    "logprobs": (False, None),
    "logit_bias": (None, {}),
    "echo": (False, None),
    "best_of": (1, None),
    "suffix": (None, ""),
    "metadata": (None,),
    "store": (False, None),
    "parallel_tool_calls": (None,),
    "tools": (None, []),
}


@dataclass(frozen=True, slots=True)
class ServedModel:
    name: str
    max_model_len: int


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    generation: GenerationRequest
    stream: bool
    include_usage: bool
    # vLLM's extension: every chunk carries the usage so far, so a client knows exactly
    # what it received (and is billed for) even if the stream ends early.
    continuous_usage: bool = False


def load_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"null")
    except (ValueError, RecursionError):
        # ValueError: bad JSON, bad UTF-8, an integer of over 4,300 digits; RecursionError:
        # arrays or objects nested thousands deep. None of them is a request we could serve.
        raise OpenAIError(
            "We could not parse the JSON body of your request; send a JSON object "
            "(numbers of at most 4,300 digits, nesting under 1,000 levels).",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise OpenAIError("The request body must be a JSON object.", code="invalid_json")
    return body


def parse_request(
    body: dict[str, Any],
    kind: RequestKind,
    *,
    model: ServedModel,
    tenant: str,
    tenant_id: int,
    api_key_id: int | None,
    app_header: str | None = None,
) -> ParsedRequest:
    _check_fields(body, _CHAT if kind is RequestKind.CHAT else _COMPLETION)
    _check_model(body, model)
    _check_n(body)
    stream = _bool(body, "stream", False)
    prefix = "chatcmpl-" if kind is RequestKind.CHAT else "cmpl-"
    generation = GenerationRequest(
        request_id=prefix + uuid.uuid4().hex,
        kind=kind,
        tenant=tenant,
        tenant_id=tenant_id,
        api_key_id=api_key_id,
        model=model.name,
        max_tokens=_max_tokens(body, kind, model),
        received_at=time.time(),
        prompt=_prompt(body) if kind is RequestKind.COMPLETION else None,
        messages=_messages(body) if kind is RequestKind.CHAT else None,
        temperature=_number(body, "temperature", 1.0, low=0.0, high=2.0),
        top_p=_number(body, "top_p", 1.0, low=0.0, high=1.0, low_open=True),
        stop=_stop(body),
        seed=_seed(body),
        app=_app(body, app_header),
        ignore_eos=_bool(body, "ignore_eos", False),
        stream=stream,
    )
    _check_size(generation, model)
    return ParsedRequest(generation, stream, *_stream_options(body, stream))


def prompt_chars(request: GenerationRequest) -> int:
    if request.kind is RequestKind.CHAT:
        return sum(len(m["content"]) for m in request.messages or ())
    return len(request.prompt or "")


def _check_size(request: GenerationRequest, model: ServedModel) -> None:
    """Refuse by size a prompt that cannot fit, before any tokenizer spends time on it."""
    limit = model.max_model_len * MAX_CHARS_PER_TOKEN
    if prompt_chars(request) > limit:
        param = "messages" if request.kind is RequestKind.CHAT else "prompt"
        raise invalid(
            param,
            f"The prompt is longer than this model's context of {model.max_model_len} tokens "
            f"can hold (over {limit:,} characters). Shorten it.",
            "context_length_exceeded",
        )


def _check_fields(body: dict[str, Any], allowed: frozenset[str]) -> None:
    for name, value in body.items():
        if name in allowed:
            continue
        if name in _NEUTRAL:
            if value not in _NEUTRAL[name]:
                raise invalid(name, f"'{name}' is not supported by this server.", "unsupported")
            continue
        shown = name if name.isprintable() and name.strip() else repr(name)
        raise invalid(name, f"Unrecognized request argument supplied: {shown}", "unknown_parameter")


def _check_model(body: dict[str, Any], model: ServedModel) -> None:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise invalid("model", "'model' is required: the id of a served model (GET /v1/models).")
    if name != model.name:
        raise OpenAIError(
            f"The model '{name}' does not exist; this server serves '{model.name}'.",
            param="model",
            code="model_not_found",
        )


def _check_n(body: dict[str, Any]) -> None:
    n = body.get("n", 1)
    if n is not None and (not _is_int(n) or n != 1):
        raise invalid("n", "Only n=1 is supported: send one request per completion.")


def _max_tokens(body: dict[str, Any], kind: RequestKind, model: ServedModel) -> int | None:
    name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    value = body.get(name)
    if value is None:
        # OpenAI's defaults: 16 for legacy completions, the rest of the context for chat.
        return 16 if kind is RequestKind.COMPLETION else None
    limit = model.max_model_len - 1
    if not _is_int(value) or not 1 <= value <= limit:
        raise invalid(name, f"'{name}' must be an integer from 1 to {limit} for this model.")
    return int(value)


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "'messages' must be a non-empty array of messages.")
    return [_message(i, message) for i, message in enumerate(messages)]


def _message(index: int, message: Any) -> dict[str, str]:
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise invalid(param, f"'{param}' must be an object with 'role' and 'content'.")
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:  # a list or object is unhashable
        raise invalid(f"{param}.role", f"'{param}.role' must be one of {sorted(ROLES)}.")
    return {"role": role, "content": _content(f"{param}.content", message.get("content"))}


def _content(param: str, content: Any) -> str:
    if isinstance(content, str):
        return _encodable(param, content)
    if isinstance(content, list) and all(_is_text_part(part) for part in content):
        return _encodable(param, "".join(part["text"] for part in content))
    raise invalid(param, f"'{param}' must be a string or an array of text parts.")


def _encodable(param: str, text: str) -> str:
    """Text a tokenizer can take: JSON's \\u escapes can spell a lone surrogate, which no
    UTF-8 encoder accepts (the worker's tokenizer would fail on it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise invalid(
            param,
            f"'{param}' holds a lone surrogate (\\u{ord(text[exc.start]):04x} at character "
            f"{exc.start}); send valid Unicode text.",
        ) from None
    return text


def _is_text_part(part: Any) -> bool:
    return (
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
    )


def _prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise invalid("prompt", "'prompt' must be a non-empty string (one prompt per request).")
    return _encodable("prompt", prompt)


def _number(
    body: dict[str, Any],
    name: str,
    default: float,
    *,
    low: float,
    high: float,
    low_open: bool = False,
) -> float:
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > low if low_open else value >= low) and value <= high:
        return float(value)
    bracket = "(" if low_open else "["
    raise invalid(name, f"'{name}' must be a number in {bracket}{low:g}, {high:g}].")


def _stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    valid = isinstance(stops, list) and all(isinstance(s, str) and s for s in stops)
    if not valid or len(stops) > MAX_STOP_SEQUENCES:
        raise invalid("stop", f"'stop' must be a string or up to {MAX_STOP_SEQUENCES} strings.")
    return [_encodable("stop", s) for s in stops]


def _seed(body: dict[str, Any]) -> int | None:
    seed = body.get("seed")
    if seed is None:
        return None
    if not _is_int(seed) or not -(2**63) <= seed < 2**63:
        raise invalid("seed", "'seed' must be a 64-bit integer.")
    return int(seed)


def _app(body: dict[str, Any], header: str | None) -> str | None:
    app = body.get("app", header)
    if app is None:
        return None
    if not isinstance(app, str) or not 1 <= len(app) <= MAX_APP_ID_LENGTH:
        raise invalid("app", f"'app' must be a string of 1 to {MAX_APP_ID_LENGTH} characters.")
    if not printable_text(app):
        # It is billed under this name: a NUL or a control character would poison the row.
        raise invalid("app", "'app' must be printable text (no control characters).")
    return app


def _bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(name, f"'{name}' must be true or false.")
    return value


STREAM_OPTIONS = ("include_usage", "continuous_usage_stats")


def _stream_options(body: dict[str, Any], stream: bool) -> tuple[bool, bool]:
    """(include_usage, continuous_usage_stats)."""
    options = body.get("stream_options")
    if options is None:
        return False, False
    if not stream:
        raise invalid("stream_options", "'stream_options' is only allowed with stream: true.")
    if not isinstance(options, dict) or set(options) - set(STREAM_OPTIONS):
        raise invalid(
            "stream_options", f"'stream_options' may only hold {' and '.join(STREAM_OPTIONS)}."
        )
    return _bool(options, "include_usage", False), _bool(options, "continuous_usage_stats", False)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
